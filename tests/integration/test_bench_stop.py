"""Stopping a bench client after Ctrl-C, through a real (local) agent and real processes.

The client here ignores SIGTERM, so the stop needs its SIGKILL, and a second Ctrl-C has time
to arrive during it: then the client is left running and the answer holds the command that
stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.executor.bench_host import BenchHost, stop_after_interrupt
from toolkit.executor.session import Session
from toolkit.plan import Connection

pytestmark = pytest.mark.integration
LOCAL = Connection(address="127.0.0.1", local=True)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[BenchHost]:
    session = Session(name="local", connection=LOCAL, python=sys.executable)
    try:
        yield BenchHost(session, "local", sys.executable, str(tmp_path / "bench"))
    finally:
        session.close()


@pytest.fixture
def stubborn(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A 'client' in its own session that ignores SIGTERM, its pid in a pid file."""
    pidfile = tmp_path / "bench.pid"
    proc = subprocess.Popen(
        ["bash", "-c", f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done"],
        start_new_session=True,
    )
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.02)
    try:
        yield proc, pidfile
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_stop_kills_a_client_that_ignores_sigterm(host: BenchHost, stubborn) -> None:
    proc, pidfile = stubborn
    said: list[str] = []
    answer = stop_after_interrupt(host, str(pidfile), "KILL-COMMAND", said.append)
    assert said == [
        "interrupted: stopping the bench client on local (Ctrl-C again to leave it running)"
    ]
    assert answer == "stopped the bench client on local (stopped with SIGKILL)"
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_a_second_ctrl_c_stops_waiting_and_says_how_to_stop_it(host: BenchHost, stubborn) -> None:
    _proc, pidfile = stubborn
    host.call("facts", "facts", "{}")  # the helper is on the host: the stop starts at once
    second = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    second.start()
    answer = stop_after_interrupt(host, str(pidfile), "KILL-COMMAND", lambda _: None)
    second.join()
    assert answer.startswith(
        "stopped waiting for the bench client on local to end; if it still runs, stop it "
        "with: KILL-COMMAND"
    )
    assert "toolkit down" in answer
