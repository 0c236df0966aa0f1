"""The small programs `toolkit check` runs on hosts, and the shell commands that carry them.

Each is standard-library Python for the host's own interpreter, sent on stdin to
`python -` (like the agent), one SSH command each:

- the probe (`toolkit/preflight/remote_probe.py`), wrapped in a shell line that first
  prints the host's clock and uid and tries `sudo -n true`, and falls back to `python3`
  when the planned interpreter is missing, so one command gathers every local fact;
- a listener: binds the planned ports, forks a detached child that answers each
  connection with a per-port nonce, and exits; the child lives `lifetime` seconds at most
  and is normally stopped at once by `STOP`;
- a connector: dials every target at once, each within `timeout` seconds, and says for
  each whether toolkit's listener (the right nonce) answered.

Every value that reaches the shell goes through `toolkit.shell`.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit import shell
from toolkit.preflight.check_flags import extractor_program, options_from_json
from toolkit.preflight.flags import EngineOptions

CLOCK, UID, SUDO, NO_PYTHON = "@@clock ", "@@uid ", "@@sudo ", "@@nopython"

LISTEN = r"""
import json, os, select, socket, sys, threading, time
spec = json.loads(sys.argv[1])
out, socks = {"bound": [], "errors": {}}, []
for item in spec["listen"]:
    family = socket.AF_INET6 if ":" in item["bind"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((item["bind"], item["port"]))
        sock.listen(64)
    except OSError as exc:
        out["errors"][item["id"]] = "cannot listen on %s:%d: %s" % (
            item["bind"], item["port"], exc.strerror or exc)
        sock.close()
        continue
    socks.append((sock, item["nonce"]))
    out["bound"].append(item["id"])
pid = os.fork() if socks else 0
if pid or not socks:
    out["pid"] = pid or None
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)

def answer(conn, nonce):
    # The client closes first, so TIME_WAIT stays on its side, not on the planned port.
    try:
        conn.settimeout(3)
        conn.sendall((nonce + "\n").encode())
        while conn.recv(256):
            pass
    except OSError:
        pass
    finally:
        conn.close()

deadline = time.time() + float(spec["lifetime"])
by_sock = dict(socks)
while time.time() < deadline:
    ready = select.select(list(by_sock), [], [], 0.2)[0]
    for sock in ready:
        try:
            conn = sock.accept()[0]
        except OSError:
            continue
        threading.Thread(target=answer, args=(conn, by_sock[sock]), daemon=True).start()
os._exit(0)
"""

CONNECT = r"""
import json, socket, sys, threading, time
spec = json.loads(sys.argv[1])
timeout = float(spec["timeout"])
results = {}

def dial(target):
    started = time.time()
    try:
        sock = socket.create_connection((target["address"], target["port"]), timeout=timeout)
    except socket.timeout:
        results[target["id"]] = {"ok": False, "kind": "timeout",
            "error": "no answer within %g s (a firewall dropping packets?)" % timeout}
        return
    except ConnectionRefusedError:
        results[target["id"]] = {"ok": False, "kind": "refused",
            "error": "connection refused (nothing listens there, or a firewall rejects it)"}
        return
    except OSError as exc:
        results[target["id"]] = {"ok": False, "kind": "error", "error": str(exc.strerror or exc)}
        return
    data = b""
    try:
        sock.settimeout(timeout)
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    ok = data.decode("utf-8", "replace").strip() == target["nonce"]
    results[target["id"]] = {"ok": ok, "kind": "ok" if ok else "wrong_peer",
        "ms": round((time.time() - started) * 1000, 1),
        "error": None if ok else "connected, but something other than the check's "
        "listener answered (another machine holds this address?)"}

threads = [threading.Thread(target=dial, args=(t,)) for t in spec["targets"]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stdout.write(json.dumps(results) + "\n")
"""

STOP = r"""
import os, signal, sys, time
pid = int(sys.argv[1])
try:
    os.kill(pid, signal.SIGTERM)
except OSError:
    sys.exit(0)
deadline = time.time() + 3
while time.time() < deadline:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
    except (OSError, IndexError):
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
"""


def program_command(python: str, *args: str) -> str:
    """`python - ARGS...`, quoted: the program itself goes on stdin."""
    return shell.join([python, "-", *args])


def probe_command(python: str, params: dict[str, Any], sudo: bool) -> str:
    """One shell line: clock, uid, `sudo -n true` (if asked), then the probe from stdin."""
    py = shell.quote(python)
    args = shell.quote(json.dumps(params, sort_keys=True))
    parts = [
        f"printf '{CLOCK}%s\\n' \"$(date +%s.%N)\"",
        f"printf '{UID}%s\\n' \"$(id -u)\"",
    ]
    if sudo:
        parts.append(
            f"if out=$(sudo -n true 2>&1 </dev/null); then echo '{SUDO}ok'; "
            f"else printf '{SUDO}%s\\n' \"${{out:-sudo -n true failed}}\" | head -n 1; fi"
        )
    parts.append(
        f"if command -v {py} >/dev/null 2>&1; then exec {py} - {args}; "
        f"else echo '{NO_PYTHON}'; exec python3 - {args}; fi"
    )
    return "; ".join(parts)


def extract_remote(session: Any, python: str, engine: str, source: str) -> EngineOptions | str:
    """Run the extractor on the host; the options, or why they could not be read."""
    command = program_command(python, engine, source)
    rc, out, err = session.run(command, stdin=extractor_program())
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " / ".join(err.strip().splitlines()[-2:]) or f"exit status {rc}"
        return f"the flag extractor failed on the host ({python}): {tail}"
    if "error" in data:
        return f"cannot read {engine}'s flags from {source}: {data['error']}"
    return options_from_json(data["options"])
