"""What the host's modules read: listening sockets, interfaces, a run's processes, HTTP.

Read-only, so every module's `facts` is made of these and a test can replace them by a
fixture. The one parser of /proc/net/tcp and the one NIC detection live here; the preflight
probe and the agent both use them.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import ipaddress
import json
import os
import socket
import subprocess
from urllib.parse import urlsplit

WILDCARDS = ("0.0.0.0", "::")
TCP_LISTEN = "0A"


def parse_proc_net_tcp(text: str, v6: bool) -> list[tuple[str, int, str]]:
    """(local address, port, state hex) per socket of a /proc/net/tcp{,6} file's text."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        addr_hex, port_hex = parts[1].split(":")
        out.append((_address(addr_hex, v6), int(port_hex, 16), parts[3]))
    return out


def _address(hexaddr: str, v6: bool) -> str:
    """/proc/net/tcp prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hexaddr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def tcp_sockets() -> list[tuple[bool, str, int, str]]:
    """(is IPv6, local address, port, state hex) of every TCP socket (/proc/net/tcp{,6})."""
    found = []
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError:
            continue
        found += [
            (v6, address, port, state) for address, port, state in parse_proc_net_tcp(text, v6)
        ]
    return found


def listening_ports() -> dict[int, list[str]]:
    """{port: [local address, ...]} of TCP sockets in LISTEN state (IPv4 and IPv6)."""
    found: dict[int, list[str]] = {}
    for _, address, port, state in tcp_sockets():
        if state == TCP_LISTEN:
            found.setdefault(port, []).append(address)
    return found


def port_holders(port: int, bind: str, listening: dict[int, list[str]]) -> list[str]:
    """The listening addresses that would make binding `bind:port` fail."""
    addrs = listening.get(port, [])
    return [
        a for a in addrs if a in WILDCARDS or bind in WILDCARDS or a in (bind, "::ffff:" + bind)
    ]


def ip_addr() -> list | None:
    """`ip -j addr` (iproute2) as parsed JSON; None without iproute2 or its -j."""
    try:
        done = subprocess.run(
            ["ip", "-j", "addr"],
            stdin=subprocess.DEVNULL,  # the agent's stdin carries its requests
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
        if done.returncode != 0:
            return None
        data = json.loads(done.stdout.decode() or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return data if isinstance(data, list) else None


def interfaces() -> dict[str, list[str]]:
    """{interface: ["address/prefix", ...]}, the form `detect_nic` reads."""
    return {
        item["ifname"]: [
            "%s/%s" % (a["local"], a.get("prefixlen", 32))
            for a in item.get("addr_info", [])
            if "local" in a
        ]
        for item in ip_addr() or []
    }


def detect_nic(address: str, ifaces: dict[str, list[str]]) -> tuple[str, str] | None:
    """(interface, why) for the interface that carries `address`: the one holding it, else
    the one whose network contains it (127.0.0.2 is on lo as 127.0.0.0/8)."""
    for name, cidrs in ifaces.items():
        if address in (c.split("/")[0] for c in cidrs):
            return name, "holds %s" % address
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return None
    for name, cidrs in ifaces.items():
        for cidr in cidrs:
            try:
                network = ipaddress.ip_interface(cidr).network
            except ValueError:
                continue  # an address `ip` printed that Python cannot parse: not ours
            if wanted in network:
                return name, "covers %s (in %s)" % (address, cidr)
    return None


# ----------------------------------------------------------------------------- processes


def run_processes(run_id: str | None, host: str, leaders: list[int] | tuple = ()) -> list[int]:
    """PIDs whose environment carries this run id and host name (survives lost state), and
    every process in the session of such a process or of a `leaders` pid (the pidfiles)."""
    want = [("TOOLKIT_RUN_ID=" + run_id).encode()] if run_id else []
    host_tag = ("TOOLKIT_HOST=" + host).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        has_run = any(e.startswith(b"TOOLKIT_RUN_ID=") for e in env)
        if host_tag in env and has_run and all(w in env for w in want):
            pids.append(int(entry))
    # Only sessions toolkit started (a tagged process that leads its session, or a pidfile's
    # wrapper, checked by `leader`): a process run in an SSH session must not drag that
    # session's shell in. A wrapper that already exited still names its session: the kernel
    # does not reuse a PID while it identifies a live session.
    sessions = ({session_of(p) for p in pids} & set(pids)) | {p for p in leaders if p}
    return sorted(set(pids) | set(session_members(sessions)))


def session_of(pid: int) -> int | None:
    """A process's session id (the 6th field of /proc/PID/stat); None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def session_members(sessions: set) -> list[int]:
    """Processes in these sessions. Each node starts as a session leader and an engine's
    children stay in its session, while their environment may not show the run's tags:
    SGLang's scheduler and detokenizer set their process title (setproctitle), which
    overwrites the memory /proc/PID/environ reads."""
    if not sessions:
        return []
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and int(e) != os.getpid() and session_of(int(e)) in sessions
    ]


def run_id_of(pid: int) -> str | None:
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"TOOLKIT_RUN_ID="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        return None
    return None


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def leader(pidfile: str) -> int | None:
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


def exit_status(pidfile: str) -> str | None:
    """The exit status the start wrapper recorded next to the pidfile, once it exited."""
    try:
        with open(pidfile + ".rc") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:] if lines > 0 else []


def http_status(url: str, timeout: float = 3.0) -> int | None:
    """The HTTP status of GET `url`; 0 when a connection opened but no HTTP status came back
    (still starting up, or not HTTP), None when no connection opened (nothing listening).

    A bare socket rather than urllib: a readiness poll needs only the status line, and
    urllib would route through any http_proxy set on the host and cost every agent its
    import time.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    request = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, parts.netloc)
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
