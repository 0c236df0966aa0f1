"""The fault-handling pieces that need no SSH: signal handling, fan-out under Ctrl-C, the
agent's stop by session and its run-owned record removal, and the workdir-writable check.

Processes here are real (started by the agent's own `start` task on this machine); the
namespace-host tests in tests/integration/test_faults.py drive the same paths end to end.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.unit.test_check_rules import WORKDIR, failed, findings, healthy
from tests.unit.test_planner import plan_for
from toolkit.executor.cancel import Abandoned, Interrupted, signals
from toolkit.executor.session import parallel
from toolkit.host import facts as agent
from toolkit.host.agent import run_op
from toolkit.host.probe import _disks
from toolkit.host.protocol import Op


def _kill_me_soon(signum: int) -> None:
    threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()


def test_sigterm_raises_interrupted_and_fan_out_does_not_wait_for_its_workers() -> None:
    release = threading.Event()
    with signals(Console(quiet=True)), pytest.raises(Interrupted) as caught:
        _kill_me_soon(signal.SIGTERM)
        parallel([1, 2], lambda _: release.wait(60))
    assert caught.value.signum == signal.SIGTERM
    assert not release.is_set()  # the workers were still blocked: left, not joined
    release.set()


def test_a_deferred_step_finishes_and_a_second_signal_abandons_the_cleanup() -> None:
    finished = []
    with signals(Console(quiet=True)) as guard:
        with pytest.raises(Interrupted), guard.deferred("the launch"):
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("launch")  # still runs: the signal waits for the block's end
        assert finished == ["launch"]
        with pytest.raises(Abandoned), guard.cleanup():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # not reached in full: the second signal ends the cleanup


def _start(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    files = {
        "script": str(tmp_path / f"{name}.sh"),
        "log": str(tmp_path / f"{name}.log"),
        "pidfile": str(tmp_path / f"{name}.pid"),
    }
    Path(files["script"]).write_text(body)
    run_op(Op("start", {"name": name, **files}), False)[0]
    return files


def _alive(pid: int) -> bool:
    return agent.alive(pid)


def test_stop_finds_a_process_that_cleared_its_environment_through_its_session(
    tmp_path: Path,
) -> None:
    # Like the router: no TOOLKIT_RUN_ID in its environment, so only the session finds it.
    files = _start(tmp_path, "router", "env -i sleep 300 &\necho $! > child.pid\nwait\n")
    child_file = tmp_path / "child.pid"
    while not child_file.exists() or not child_file.read_text().strip():
        time.sleep(0.05)
    child = int(child_file.read_text())
    assert agent.run_id_of(child) is None
    stop = {"run_id": "r1", "host": "h@x", "grace": 5, "pidfiles": [files["pidfile"]]}
    out = run_op(Op("stop", stop), False)[0]
    assert out.status == "changed", out
    assert not _alive(child)


def test_stop_never_signals_a_pid_that_is_not_the_wrapper_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "stale.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a reused PID: this test's own process
    out = run_op(Op("stop", {"run_id": "r1", "host": "h@x", "pidfiles": [str(pidfile)]}), False)[0]
    assert out.status == "ok" and out.msg == "nothing to stop"


def test_release_removes_only_its_own_runs_pointer(tmp_path: Path) -> None:
    active = tmp_path / "active.json"
    active.write_text(json.dumps({"run_id": "live"}))
    kept = run_op(Op("release", {"path": str(active), "run_id": "old"}), False)[0]
    assert kept.status == "ok" and "active run is live" in kept.msg
    assert active.exists()
    gone = run_op(Op("release", {"path": str(active), "run_id": "live"}), False)[0]
    assert gone.status == "changed" and not active.exists()


def test_probe_tells_writable_from_unwritable_directories(tmp_path: Path) -> None:
    found = _disks([str(tmp_path / "work"), "/proc/toolkit-work"])
    assert found[str(tmp_path / "work")]["writable"] is True
    assert not list(tmp_path.iterdir())  # the test file is gone again
    proc = found["/proc/toolkit-work"]
    assert proc["checked"] == "/proc" and proc["writable"] is False and proc["write_error"]


def test_an_unwritable_run_dir_is_a_disk_failure_with_a_fix() -> None:
    plan = plan_for("a3-1p1d-64k", extra="", overrides=())
    facts = healthy(plan)
    host = plan.nodes[-1].host
    facts[host].probe["disk"][f"{WORKDIR}/runs"] = {
        "checked": WORKDIR,
        "free_bytes": 10**11,
        "writable": False,
        "write_error": "Read-only file system",
    }
    bad = failed(findings(plan, facts, options={h: "none" for h in plan.hosts}))
    assert list(bad) == [(host, "disk")]
    finding = bad[(host, "disk")]
    assert "is not writable by uid 0: Read-only file system" in finding.detail
    assert "set workdir for this host in the inventory" in finding.fix


def test_a_missing_bench_client_fails_check_but_not_up() -> None:
    plan = plan_for("a3-1p1d-64k", extra="", overrides=())
    assert plan.bench is not None
    facts = healthy(plan)
    facts[plan.bench.host].probe["packages"]["sglang"] = {"version": None, "path": None}
    for_check = findings(plan, facts, rehearse=True)
    for_up = findings(plan, facts, rehearse=True, launching=True)
    assert for_check[(plan.bench.host, "bench")].status == "failed"
    assert for_up[(plan.bench.host, "bench")].status == "skipped"
    assert "`toolkit bench` will" in for_up[(plan.bench.host, "bench")].detail
