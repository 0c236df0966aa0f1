"""Running the toolkit CLI as a user would (a subprocess), and cleaning up after it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netns import TestHost

REPO = Path(__file__).resolve().parents[2]
# The test hosts' Python: sees the router, the bench client and torch, never toolkit (as on a
# real cluster, where toolkit is installed on the control machine only). scripts/setup.sh makes it.
HOST_PYTHON = str(REPO / ".venv-host" / "bin" / "python")


def toolkit(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`toolkit ARGS` with a wide, plain console; stdout and stderr captured."""
    full_env = {**env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    full_env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_processes(hosts: list[TestHost]) -> list[int]:
    """PIDs started by toolkit for these hosts (TOOLKIT_HOST=<name>@<address>, so another
    test session's hosts of the same names are left alone)."""
    wanted = [f"TOOLKIT_HOST={h.name}@{h.address}".encode() for h in hosts]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        tagged = any(w in env for w in wanted)
        if tagged and any(e.startswith(b"TOOLKIT_RUN_ID=") for e in env):
            found.append(int(entry))
    return found


def kill_leftovers(hosts: list[TestHost]) -> list[int]:
    """Last-resort cleanup for a failed test; returns what had to be killed."""
    pids = run_processes(hosts)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    time.sleep(0.2 if pids else 0)
    return pids
