"""The host-side agent: one request of tasks per phase, results as JSON.

The executor starts this file once per host and command (`serve`: one JSON request per
line on stdin, answered on stdout), so every phase of `toolkit up` reuses one login shell
and one Python on each host; a host needs nothing but Python 3.8+. Each task reads the
current state first and acts only on a difference (Ansible's contract: ok / changed /
skipped / failed), reporting before and after values. Long waits stream `@@progress`
lines so the control side can draw a live view; a request's last line is `@@result` with
every task's outcome.

Standard library only, and compatible with Python 3.8: it runs on the hosts' Python.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

RESULT = "@@result "
PROGRESS = "@@progress "
# Written every HEARTBEAT_S while a request runs: the control side treats a host silent for
# much longer as one that stopped answering, and a heartbeat that cannot be written (the
# session is gone) ends this agent instead of letting it wait out its task.
HEARTBEAT = "@@alive"
HEARTBEAT_S = 2.0
_OUT = threading.Lock()


def emit(line):
    """One line to the control side; lines from the heartbeat thread never interleave."""
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def result(name, status, msg="", **extra):
    out = {"task": name, "status": status, "msg": msg}
    out.update(extra)
    return out


# ----------------------------------------------------------------------------- facts


def listening_ports():
    """{port: [local address, ...]} of TCP sockets in LISTEN state (IPv4 and IPv6)."""
    found = {}
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] != "0A":
                        continue
                    addr_hex, port_hex = parts[1].split(":")
                    found.setdefault(int(port_hex, 16), []).append(_addr(addr_hex, v6))
        except OSError:
            continue
    return found


def _addr(hexaddr, v6):
    raw = bytes.fromhex(hexaddr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def interfaces(with_prefix=False):
    """{interface: [addresses]} from `ip -j addr` (iproute2); "addr/prefix" if asked."""
    try:
        out = subprocess.run(
            ["ip", "-j", "addr"],
            stdin=subprocess.DEVNULL,  # stdin carries the agent's requests
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
        ).stdout
        data = json.loads(out.decode() or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    return {
        item["ifname"]: [
            "%s/%s" % (a["local"], a.get("prefixlen", 32)) if with_prefix else a["local"]
            for a in item.get("addr_info", [])
            if "local" in a
        ]
        for item in data
    }


def port_in_use(port, bind, listening):
    addrs = listening.get(port, [])
    wild = ("0.0.0.0", "::")
    return [a for a in addrs if a in wild or bind in wild or a == bind or a == "::ffff:" + bind]


# ----------------------------------------------------------------------------- processes


def run_processes(run_id, host):
    """PIDs whose environment carries this run id and host name (survives lost state)."""
    want = [("TOOLKIT_RUN_ID=" + run_id).encode()] if run_id else []
    host_tag = ("TOOLKIT_HOST=" + host).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        has_run = any(e.startswith(b"TOOLKIT_RUN_ID=") for e in env)
        if host_tag in env and has_run and all(w in env for w in want):
            pids.append(int(entry))
    return pids


def run_id_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"TOOLKIT_RUN_ID="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        return None
    return None


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def session_members(sid):
    """Live PIDs of the session `sid`: a started process and everything it spawned, found
    even when a program rewrites its environment (the router does), unless it left the
    session (setsid) on purpose."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def read_pid(path):
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def tail(path, lines):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:] if lines > 0 else []


def http_status(url, timeout=3.0):
    """The HTTP status of GET `url`; 0 when a connection opened but no HTTP status came back
    (still starting up, or not HTTP), None when no connection opened (nothing listening).

    A bare socket rather than urllib: a readiness poll needs only the status line, and
    urllib would route through any http_proxy set on the host and cost every agent its
    import time.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    request = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
        target,
        parts.netloc,
    )
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
    except OSError:
        return None
    head = b""
    try:
        with sock:
            sock.sendall(request.encode())
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return 0
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1].isdigit():
        return int(fields[1])
    return 0


# ----------------------------------------------------------------------------- tasks


def task_active_run(args, check):
    """Is another toolkit run already active on this host?"""
    path = os.path.join(args["workdir"], "active.json")
    try:
        with open(path) as fh:
            active = json.load(fh)
    except (OSError, ValueError):
        active = None
    pids = run_processes(None, args["host"])
    running = sorted({run_id_of(p) for p in pids if alive(p)} - {None})
    if running:
        return result(
            "active_run",
            "failed",
            "toolkit run {} is running here".format(", ".join(running)),
            runs=running,
            record=active,
        )
    return result("active_run", "ok", "no toolkit run is active", record=active)


def task_ports_free(args, check):
    listening = listening_ports()
    busy = []
    for item in args["ports"]:
        holders = port_in_use(item["port"], item["bind"], listening)
        if holders:
            busy.append("%s:%d (%s)" % (holders[0], item["port"], item["purpose"]))
    if busy:
        return result("ports_free", "failed", "port already in use: " + ", ".join(busy))
    return result("ports_free", "ok", "%d planned ports free" % len(args["ports"]))


def task_nic(args, check):
    ifaces = interfaces()
    address, wanted = args["address"], args.get("nic")
    if wanted:
        if wanted not in ifaces:
            return result(
                "nic",
                "failed",
                "interface {} does not exist on this host (have: {})".format(
                    wanted, ", ".join(sorted(ifaces)) or "none"
                ),
            )
        return result("nic", "ok", f"using {wanted}", nic=wanted)
    for name, addrs in ifaces.items():
        if address in addrs:
            return result("nic", "ok", f"detected {name} (holds {address})", nic=name)
    # Not assigned verbatim (127.0.0.2 is on lo as 127.0.0.0/8): the interface whose
    # network contains it.
    try:
        wanted_ip = ipaddress.ip_address(address)
    except ValueError:
        wanted_ip = None
    for name, cidrs in interfaces(with_prefix=True).items():
        for cidr in cidrs:
            if wanted_ip is not None and wanted_ip in ipaddress.ip_interface(cidr).network:
                return result("nic", "ok", f"detected {name} ({address} is in {cidr})", nic=name)
    return result(
        "nic",
        "failed",
        f"no interface holds {address}; set `nic` for this host in the inventory",
    )


def task_cpu_governor(args, check):
    paths = sorted(glob.glob(args["glob"]))
    want = args["value"]
    if not paths:
        return result("cpu_governor", "skipped", "no cpufreq on this host (a VM?)")
    before = {}
    for path in paths:
        try:
            with open(path) as fh:
                before[path] = fh.read().strip()
        except OSError as exc:
            return result("cpu_governor", "failed", f"cannot read {path}: {exc}")
    differ = [p for p, v in before.items() if v != want]
    summary = sorted(set(before.values()))
    if not differ:
        return result("cpu_governor", "ok", "governor is %s on %d CPUs" % (want, len(paths)))
    if check:
        return result(
            "cpu_governor",
            "changed",
            "would set governor %s on %d CPUs" % (want, len(differ)),
            before=summary,
            after=want,
            previous=before,
        )
    for path in differ:
        try:
            with open(path, "w") as fh:
                fh.write(want)
        except OSError as exc:
            return result("cpu_governor", "failed", f"cannot write {path}: {exc}")
    return result(
        "cpu_governor",
        "changed",
        "set governor %s on %d CPUs" % (want, len(differ)),
        before=summary,
        after=want,
        previous={p: before[p] for p in differ},
    )


def task_sysctl(args, check):
    key, want = args["key"], str(args["value"])
    path = "/proc/sys/" + key.replace(".", "/")
    name = "sysctl " + key
    if not os.path.exists(path):
        return result(name, "skipped", f"{path} does not exist on this kernel")
    try:
        with open(path) as fh:
            current = " ".join(fh.read().split())
    except OSError as exc:
        return result(name, "failed", f"cannot read {path}: {exc}")
    if current == " ".join(want.split()):
        return result(name, "ok", f"{key} is {current}")
    if check:
        return result(name, "changed", f"would set {key}", before=current, after=want)
    try:
        with open(path, "w") as fh:
            fh.write(want)
    except OSError as exc:
        return result(name, "failed", f"cannot write {path}: {exc}")
    return result(name, "changed", f"set {key}", before=current, after=want)


def task_write_files(args, check):
    written = []
    for item in args["files"]:
        path = item["path"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = base64.b64decode(item["b64"])
        mode = int(item.get("mode", "600"), 8)
        # Create with the final mode so a secret is never readable, even briefly, and
        # rename into place so a reader never sees a half-written file.
        tmp = "%s.%d.tmp" % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        written.append(path)
    return result("write_files", "changed", "wrote %d files" % len(written), paths=written)


def task_start(args, check):
    with open(args["log"], "ab") as log:
        # A wrapper shell records the exit status, so a failure report can show it.
        wrapper = 'bash "$0"; echo $? > "$1"'
        proc = subprocess.Popen(
            ["bash", "-c", wrapper, args["script"], args["pidfile"] + ".rc"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.path.dirname(args["script"]),
            start_new_session=True,  # its own session and process group, detached from SSH
            close_fds=True,
        )
    with open(args["pidfile"], "w") as fh:
        fh.write("%d\n" % proc.pid)
    return result("start " + args["name"], "changed", "started pid %d" % proc.pid, pid=proc.pid)


def _state(target, started):
    pid = read_pid(target["pidfile"])
    if pid is None or not alive(pid):
        return "failed"
    # A refused connection means the port is not open yet: the request itself tells
    # "starting" from "loading", with no separate look at the listening sockets.
    status = http_status(target["url"], timeout=2.0)
    if status is None:
        return "starting"
    return "ready" if status == target.get("expect", 200) else "loading"


def task_wait_http(args, check):
    """Poll each target until its URL answers, its process dies, or the timeout passes."""
    targets = args["targets"]
    started = time.time()
    deadline = started + float(args["timeout"])
    states = {t["name"]: "starting" for t in targets}
    interval = float(args.get("interval", 0.25))
    while True:
        for t in targets:
            if states[t["name"]] in ("ready", "failed", "stopped"):
                continue
            new = _state(t, started)
            if new == "failed" and args.get("abort_mark") and os.path.exists(args["abort_mark"]):
                new = "stopped"  # killed because a node elsewhere failed, not a failure here
            if new != states[t["name"]]:
                states[t["name"]] = new
                _progress(t["name"], new, time.time() - started)
        if all(s in ("ready", "failed", "stopped") for s in states.values()):
            break
        if any(s == "failed" for s in states.values()) and args.get("stop_on_failure", True):
            break
        if time.time() > deadline:
            break
        time.sleep(interval)
    out = []
    another_failed = any(s == "failed" for s in states.values())
    timed_out = time.time() > deadline
    for t in targets:
        state = states[t["name"]]
        elapsed = round(time.time() - started, 1)
        if state == "stopped":
            out.append(result("ready " + t["name"], "skipped", "stopped: another node failed"))
            continue
        if state not in ("ready", "failed") and another_failed and not timed_out:
            out.append(result("ready " + t["name"], "skipped", f"still {state}", state=state))
            continue
        if state == "ready":
            out.append(result("ready " + t["name"], "ok", f"ready in {elapsed:.1f} s"))
        elif state == "failed":
            rc = _exit_code(t)
            out.append(
                result(
                    "ready " + t["name"],
                    "failed",
                    f"process exited{rc}",
                    log_tail=tail(t["log"], int(args.get("tail", 40))),
                )
            )
        else:
            out.append(
                result(
                    "ready " + t["name"],
                    "failed",
                    f"not ready after {elapsed:.0f} s (still {state})",
                    log_tail=tail(t["log"], int(args.get("tail", 40))),
                )
            )
    return out


def _exit_code(target):
    path = target["pidfile"] + ".rc"
    try:
        with open(path) as fh:
            return " with status " + fh.read().strip()
    except OSError:
        return ""


def _progress(name, state, elapsed, **extra):
    entry = {"name": name, "state": state, "t": elapsed}
    entry.update(extra)
    emit(PROGRESS + json.dumps(entry))


def task_probe(args, check):
    """One look at each target: starting, loading, ready or failed (with its log tail)."""
    states = {}
    for t in args["targets"]:
        state = _state(t, 0.0)
        entry = {"state": state}
        if state == "failed":
            entry["rc"] = _exit_code(t).replace(" with status ", "") or None
            entry["log_tail"] = tail(t["log"], int(args.get("tail", 40)))
        states[t["name"]] = entry
    return result("probe", "ok", "", states=states)


def task_http(args, check):
    """One request (the smoke test), with http.client: it reads chunked answers, and unlike
    urllib it never sends cluster-internal traffic to a proxy from the host's environment."""
    import http.client  # imported where used: most phases need no HTTP (start-up cost)

    parts = urlsplit(args["url"])
    body = args.get("body")
    data = json.dumps(body).encode() if body is not None else None
    path = parts.path + ("?" + parts.query if parts.query else "")
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=float(args.get("timeout", 60))
    )
    try:
        conn.request(
            args.get("method", "GET"), path, body=data, headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        text = resp.read(1 << 20).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return result("http", "failed", "request to {} failed: {}".format(args["url"], exc))
    finally:
        conn.close()
    if resp.status >= 400:
        return result("http", "failed", "HTTP %d: %s" % (resp.status, text[:300]), code=resp.status)
    return result("http", "ok", "HTTP %d" % resp.status, code=resp.status, body=text)


def task_status(args, check):
    rows = []
    for item in args["processes"]:
        pid = read_pid(item["pidfile"])
        is_alive = pid is not None and alive(pid)
        uptime = None
        if is_alive:
            try:
                uptime = time.time() - os.stat("/proc/%d" % pid).st_mtime
            except OSError:
                uptime = None
        code = http_status(item["url"], timeout=2.0) if is_alive and item.get("url") else None
        code = code or None  # 0: open but no HTTP answer
        rows.append(
            {
                "name": item["name"],
                "pid": pid,
                "alive": is_alive,
                "http": code,
                "uptime": uptime,
                "log": item["log"],
            }
        )
    return result("status", "ok", "", processes=rows)


def _signal_group(pid, sig):
    try:
        os.killpg(os.getpgid(pid), sig)
    except (OSError, ProcessLookupError):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _leader(pidfile):
    """The session the wrapper in `pidfile` leads, or None when that PID now belongs to an
    unrelated program. A wrapper that already exited still names its session: the kernel
    does not reuse a PID while it identifies a live session, so its members are ours."""
    pid = read_pid(pidfile)
    if pid is None or not alive(pid):
        return pid
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return pid
    return pid if (pidfile + ".rc").encode() in argv else None


def task_stop(args, check):
    """Stop every process of the run on this host: SIGTERM, grace, SIGKILL; verify.

    Each pidfile names a started process that leads its own session: the session's members
    are stopped with it, so a program that rewrote its environment (the router) is found too.
    """
    run_id, host = args["run_id"], args["host"]
    if args.get("mark"):  # tells this host's readiness wait that the stop was deliberate
        with contextlib.suppress(OSError), open(args["mark"], "w") as fh:
            fh.write("stopped\n")
    leaders = [p for p in (_leader(f) for f in args.get("pidfiles", [])) if p is not None]

    def members():
        found = set(p for p in run_processes(run_id, host) if alive(p))
        for leader in leaders:
            found.update(session_members(leader))
        return found

    pids = members()
    if not pids:
        found = "nothing to stop"
    else:
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + float(args.get("grace", 20))
        while time.time() < deadline and members():
            time.sleep(0.05)
        killed = members()
        for pid in killed:
            _signal_group(pid, signal.SIGKILL)
        if killed:
            time.sleep(0.3)  # SIGKILL is not synchronous; let the kernel reap before verifying
        found = "stopped %d process%s%s" % (
            len(pids),
            "es" if len(pids) != 1 else "",
            " (%d after SIGKILL)" % len(killed) if killed else "",
        )
    left = sorted(members())
    listening = listening_ports()
    # Ports are this run's to free only if it ran here: with nothing of it found, whoever
    # holds them (a later run on the same ports) is not ours to report.
    ports = args.get("ports", []) if pids else []
    busy = ["%d" % p["port"] for p in ports if port_in_use(p["port"], p["bind"], listening)]
    if left or busy:
        return result(
            "stop",
            "failed",
            found
            + "; still running: {}; ports still in use: {}".format(
                left or "none", ", ".join(busy) or "none"
            ),
        )
    status = "changed" if pids else "ok"
    return result("stop", status, found, pids=sorted(pids))


def task_restore(args, check):
    out = []
    for path, value in sorted(args.get("governor", {}).items()):
        try:
            with open(path, "w") as fh:
                fh.write(value)
        except OSError as exc:
            out.append(result("restore governor", "failed", f"{path}: {exc}"))
    if args.get("governor"):
        out.append(
            result("restore governor", "changed", "restored %d CPUs" % len(args["governor"]))
        )
    for key, value in sorted(args.get("sysctl", {}).items()):
        res = task_sysctl({"key": key, "value": value}, check)
        res["task"] = "restore sysctl " + key
        out.append(res)
    return out or [result("restore", "ok", "nothing to restore")]


def task_remove(args, check):
    for path in args["paths"]:
        with contextlib.suppress(OSError):
            os.remove(path)
    return result("remove", "ok", "")


def task_release(args, check):
    """Remove the host's pointer to its active run only when it points at this run: an old
    run's `down` must not orphan the live run's record."""
    path = args["path"]
    try:
        with open(path) as fh:
            owner = json.load(fh).get("run_id")
    except (OSError, ValueError, AttributeError):
        return result("release", "ok", "no active run recorded")
    if owner != args["run_id"]:
        return result("release", "ok", "active run is %s; its record is kept" % owner)
    with contextlib.suppress(OSError):
        os.remove(path)
    return result("release", "changed", "removed the record of %s" % owner)


def task_read_file(args, check):
    try:
        with open(args["path"], "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return result("read_file", "failed", "cannot read {}: {}".format(args["path"], exc))
    return result("read_file", "ok", "", b64=base64.b64encode(data).decode())


def task_tail(args, check):
    return result("tail", "ok", "", lines={p: tail(p, int(args["lines"])) for p in args["paths"]})


def task_run(args, check):
    """Run a command in the foreground (the benchmark), streaming its output."""
    proc = subprocess.Popen(
        ["bash", args["script"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=os.path.dirname(args["script"]),
    )
    with open(args["log"], "ab") as log:
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            log.flush()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            emit(PROGRESS + json.dumps({"line": line}))
    rc = proc.wait()
    status = "ok" if rc == 0 else "failed"
    return result("run " + args["name"], status, "exit status %d" % rc, rc=rc)


TASKS = {
    "active_run": task_active_run,
    "ports_free": task_ports_free,
    "nic": task_nic,
    "cpu_governor": task_cpu_governor,
    "sysctl": task_sysctl,
    "write_files": task_write_files,
    "start": task_start,
    "wait_http": task_wait_http,
    "probe": task_probe,
    "http": task_http,
    "status": task_status,
    "stop": task_stop,
    "restore": task_restore,
    "remove": task_remove,
    "release": task_release,
    "read_file": task_read_file,
    "tail": task_tail,
    "run": task_run,
}


def main(request):
    check = bool(request.get("check"))
    results = []
    for op in request["ops"]:
        try:
            out = TASKS[op["op"]](op, check)
        except Exception as exc:  # report, never die silently: the control side needs JSON
            out = result(op["op"], "failed", f"{type(exc).__name__}: {exc}")
        results.extend(out if isinstance(out, list) else [out])
        if op.get("stop_on_failure") and any(r["status"] == "failed" for r in results):
            break
    emit(RESULT + json.dumps(results))


def _heartbeat(busy):
    while True:
        time.sleep(HEARTBEAT_S)
        if not busy.is_set():
            continue
        try:
            emit(HEARTBEAT)
        except (OSError, ValueError):
            os._exit(1)  # nobody is listening: the control side is gone or gave up on us


def serve():
    """Answer requests, one JSON line each, until stdin closes (the session ended)."""
    busy = threading.Event()
    threading.Thread(target=_heartbeat, args=(busy,), daemon=True).start()
    for line in iter(sys.stdin.buffer.readline, b""):
        busy.set()
        try:
            main(json.loads(line))
        except Exception as exc:  # a malformed request must not end the session
            failure = result("agent", "failed", "bad request: %s: %s" % (type(exc).__name__, exc))
            emit(RESULT + json.dumps([failure]))
        finally:
            busy.clear()
