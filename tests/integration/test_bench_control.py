"""`toolkit bench` under interruption and against a dead endpoint, on a rehearsed cluster.

Ctrl-C (SIGINT) and SIGTERM during a run must stop the real bench client on the bench host
(it runs there in a process group of its own), not leave it loading the cluster; a router
that is down must be said at once, before any client starts, instead of the client's 60 s
readiness wait and an INVALID that does not say why.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, TestHost
from toolkit_cli import HOST_PYTHON, kill_leftovers, run_processes, toolkit

pytestmark = pytest.mark.integration
PROFILE = "a3-1p1d-64k"
ROUTER_PORT = 6688  # profiles/_a3-pd.yaml
# 400 tokens at 100 ms each: a request runs for 40 s, far longer than the test waits.
LONG = ("--num-prompts", "4", "--max-concurrency", "2", "--set", "bench.random-output-len=400")


def listener_pids(host: TestHost, port: int) -> list[int]:
    out = host.run(["ss", "-Hltnp", f"sport = :{port}"]).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes(hosts: list[TestHost], needle: str) -> list[int]:
    return [pid for pid in run_processes(hosts) if needle in _cmdline(pid)]


class Rig:
    def __init__(self, cluster: TestCluster, env: dict, tmp: Path, workdirs: dict) -> None:
        self.env, self.cwd, self.hosts = env, tmp, cluster.hosts[:4]
        self.inventory = cluster.write_inventory(
            tmp / "inv.yaml",
            {"prefill": self.hosts[:2], "decode": self.hosts[2:4]},
            {"model_path": "/models/glm-5.1-w4a8", "python": HOST_PYTHON},
            workdirs=workdirs,
        )

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return toolkit(*args, env=self.env, cwd=self.cwd, timeout=timeout)

    def start(self, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        """`toolkit ARGS` in the background; its output lines arrive on the queue."""
        env = {**self.env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit.cli", *args],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        return proc, lines


@pytest.fixture
def rig(ssh_cluster: TestCluster, ssh_env: dict, tmp_path: Path, host_workdirs) -> Iterator[Rig]:
    r = Rig(ssh_cluster, ssh_env, tmp_path, host_workdirs)
    try:
        yield r
    finally:
        r("down", "-i", str(r.inventory), timeout=120)
        kill_leftovers(r.hosts)


def _wait_for_client(rig: Rig, lines: queue.Queue[str], seen: list[str]) -> None:
    """Until the bench client runs on its host (its output has begun)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=0.5))
        if processes(rig.hosts, "benchmark.serving") and any("bench bench on" in s for s in seen):
            return
    pytest.fail("the bench client never started:\n" + "".join(seen))


def _interrupt(rig: Rig, sig: signal.Signals) -> tuple[int, str, float]:
    proc, lines = rig.start("bench", *LONG)
    seen: list[str] = []
    _wait_for_client(rig, lines, seen)
    sent = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    elapsed = time.monotonic() - sent
    while not lines.empty():
        seen.append(lines.get())
    return rc, "".join(seen), elapsed


def test_ctrl_c_and_sigterm_stop_the_remote_client_then_a_dead_router_is_named(rig: Rig) -> None:
    up = rig("up", "-p", PROFILE, "-i", str(rig.inventory), "--rehearse", "--tpot-ms", "100")
    assert up.returncode == 0, up.stdout + up.stderr

    for sig in (signal.SIGINT, signal.SIGTERM):
        rc, out, elapsed = _interrupt(rig, sig)
        assert rc == 130, out
        assert "interrupted: stopping the bench client on" in out, out
        assert "stopped the bench client on" in out and "SIGTERM" in out, out
        # Gone from the host, not merely from our view: the client was in its own group.
        assert not processes(rig.hosts, "benchmark.serving"), out
        print(f"{sig.name}: toolkit exited {elapsed:.1f} s after the signal")

    # The router (its process rewrites its environment, so find it by its port) dies.
    routers = [pid for host in rig.hosts for pid in listener_pids(host, ROUTER_PORT)]
    assert routers
    for pid in routers:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    bench = rig("bench", "--num-prompts", "2")
    took = time.monotonic() - started
    out = bench.stdout + bench.stderr
    assert bench.returncode != 0, out
    assert "the router does not answer at http://" in out and "/health" in out, out
    assert "down or unreachable" in out and "toolkit status" in out, out
    assert "bench bench on" not in out, out  # no client was started
    print(f"dead router: bench answered in {took:.1f} s")
