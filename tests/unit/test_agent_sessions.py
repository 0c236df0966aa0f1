"""The host agent finds every process of a run, including children whose environment no
longer shows the run's tags (SGLang's scheduler and detokenizer rewrite that memory with
setproctitle), by the session toolkit started them in. Real processes, no SSH."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from toolkit.host import facts as agent
from toolkit.host.agent import run_op
from toolkit.host.protocol import Op

# A session leader tagged like a node, with a child that drops the tags from its environment
# (what an overwritten /proc/PID/environ looks like to a reader).
LEADER = """
import os, subprocess, sys, time
env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLKIT_")}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def node() -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    run_id = f"test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "TOOLKIT_RUN_ID": run_id, "TOOLKIT_HOST": "h1@10.0.0.1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        yield proc, child, run_id
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def test_untagged_children_are_found_through_the_session(node) -> None:
    proc, child, run_id = node
    assert agent.session_of(child) == proc.pid
    assert agent.run_processes(run_id, "h1@10.0.0.1") == sorted([proc.pid, child])
    # The pidfile's leader is enough once the tagged process is gone.
    assert child in agent.run_processes("no-such-run", "h1@10.0.0.1", leaders=[proc.pid])


def test_an_untrusted_session_is_not_swept_in(node) -> None:
    _proc, child, _run_id = node
    # Only sessions led by a tagged process or a pidfile's pid count: a pid that is not its
    # session's leader (say, a process in an SSH login) pulls in nothing.
    assert agent.run_processes("no-such-run", "h1@10.0.0.1", leaders=[child]) == []


def test_stop_waits_for_the_whole_session(node, tmp_path) -> None:
    proc, child, run_id = node
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(f"{proc.pid}\n")
    args = {"run_id": run_id, "host": "h1@10.0.0.1", "pidfiles": [str(pidfile)], "grace": 10}
    result = run_op(Op("stop", args), False)[0]
    assert result.status == "changed", result
    assert sorted(result.data["pids"]) == sorted([proc.pid, child])
    assert not agent.alive(child)
