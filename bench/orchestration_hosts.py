"""The state of the benchmark's hosts between rounds: ports, TIME-WAIT, listeners, sysctls.

Why a module of its own: each tool (toolkit, Ansible, the floor) must start from the same
clean hosts, and the namespace hosts share this machine's kernel, PID space and filesystem,
so cleaning up after the reference playbook and restoring the kernel's settings are this
machine's business, kept apart from the measuring in orchestration.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netns import TestHost

SERVE_PORT = 8000  # the port every benchmark's listener binds (profile and playbook alike)
SYSCTLS = ("vm.swappiness", "kernel.numa_balancing", "kernel.sched_migration_cost_ns")
ANCHOR = Path("/tmp/anchor")  # where the reference playbook and floor.sh keep pid and log


def port_free(host: TestHost, port: int = SERVE_PORT) -> bool:
    """Whether nothing listens on host:port (connection refused)."""
    try:
        with socket.create_connection((host.address, port), timeout=1):
            return False
    except OSError:
        return True


def wait_ports_free(hosts: Sequence[TestHost], timeout: float = 10) -> list[str]:
    """Wait until SERVE_PORT is free on every host; returns the hosts where it is not."""
    deadline = time.monotonic() + timeout
    busy = [h for h in hosts if not port_free(h)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.1)
        busy = [h for h in busy if not port_free(h)]
    return [h.name for h in busy]


def time_wait_count(host: TestHost, port: int = SERVE_PORT) -> int:
    """Sockets on `port` in TIME-WAIT (left by the rehearsal engine's HTTP connections)."""
    out = host.run(f"ss -Htan state time-wait '( sport = :{port} )'", check=False).stdout
    return len(out.splitlines())


def wait_time_wait_gone(hosts: Sequence[TestHost], timeout: float = 75) -> float:
    """Wait until no host has TIME-WAIT sockets on SERVE_PORT; returns the seconds waited.

    The reference listener binds without SO_REUSEADDR, so it fails ("Address already in
    use") for up to 60 s after a server that answered HTTP on the port, as toolkit's
    rehearsal engine does. Waiting is not part of any measurement.
    """
    start = time.monotonic()
    while any(time_wait_count(h) for h in hosts):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"TIME-WAIT sockets on port {SERVE_PORT} after {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - start


def reap_anchor(hosts: Sequence[TestHost]) -> None:
    """Kill the reference listeners (pid files under /tmp/anchor/ADDRESS) and their dirs.

    Namespace hosts share the PID space and filesystem with this process, so the pid file
    the remote shell wrote names a local PID.
    """
    for h in hosts:
        d = ANCHOR / h.address
        with contextlib.suppress(OSError, ValueError):
            pid = int((d / "pid").read_text().strip())
            if h.address.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        ANCHOR.rmdir()  # only if empty: another run may still use it


class Tuning:
    """The machine's sysctls, saved once and put back: namespace hosts share one kernel,
    so what the playbook and toolkit tune is this machine's own setting."""

    def __init__(self) -> None:
        self.saved = {k: v for k in SYSCTLS if (v := self._read(k)) is not None}

    @staticmethod
    def _path(key: str) -> Path:
        return Path("/proc/sys") / key.replace(".", "/")

    def _read(self, key: str) -> str | None:
        with contextlib.suppress(OSError):
            return self._path(key).read_text().strip()
        return None

    def describe(self, target: dict[str, Any]) -> str:
        """One line: the machine's values against the profile's, which decides whether
        toolkit's tune step writes anything."""
        sysctl = target["sysctl"]
        have = ", ".join(f"{k} {v}" for k, v in self.saved.items()) or "none readable"
        same = all(str(sysctl[k]) == v for k, v in self.saved.items())
        absent = [k for k in SYSCTLS if k not in self.saved]
        cpufreq = bool(glob.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"))
        return (
            f"sysctls at the start: {have}"
            + (f"; absent on this kernel: {', '.join(absent)}" if absent else "")
            + ("; already the profile's values, so toolkit's tune step only reads" if same else "")
            + ("" if cpufreq else "; no cpufreq (governor skipped by every tool)")
        )

    def restore(self) -> None:
        for key, value in self.saved.items():
            if self._read(key) != value:
                with contextlib.suppress(OSError):
                    self._path(key).write_text(value)


def leftovers(sessions: Sequence[str]) -> list[str]:
    """Namespaces of this run's clusters and processes of its temp dirs that survived."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefixes = tuple(f"tkt-{s}-" for s in sessions)
    found = [line.split()[0] for line in out.splitlines() if line.startswith(prefixes)]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"toolkit-bench-" in cmdline or b"/tmp/anchor/" in cmdline:
                    text = cmdline.replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"pid {entry}: {text[:120]}")
    return found
