"""`toolkit up` / `down` / `check` under faults, over real SSH against namespace hosts.

Each test injects one fault a cluster meets (sshd dying, a link going down, Ctrl-C, a
read-only workdir, an old run's `down`) and checks what toolkit promises in the README's
"What toolkit guarantees": no READY with a host lost, no hang, nothing of the run left on a
reachable host, and the exact command that finishes the job when something had to be left.
What toolkit printed and how long it took is printed too (`pytest -s`) for the record.
"""

from __future__ import annotations

import json
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
from test_lifecycle import PROFILE, Env, listening
from toolkit_cli import HOST_PYTHON, kill_leftovers, run_processes

pytestmark = pytest.mark.integration
SERVING_PORTS = {8000, 8001, 8998, 5000, 6688}


@pytest.fixture
def env(
    ssh_cluster: TestCluster, host_workdirs: dict[str, Path], ssh_env: dict, tmp_path: Path
) -> Iterator[Env]:
    hosts = ssh_cluster.hosts[:4]
    e = Env(ssh_cluster, hosts, ssh_env, tmp_path)
    e.workdirs = host_workdirs
    e.inventory = ssh_cluster.write_inventory(
        tmp_path / "inv.yaml",
        {"prefill": hosts[:2], "decode": hosts[2:4]},
        {"model_path": "/m", "python": HOST_PYTHON},
        workdirs=host_workdirs,
    )
    try:
        yield e
    finally:
        e.run("down", "-i", str(e.inventory), timeout=120)
        leftovers = kill_leftovers(ssh_cluster.hosts)
        assert not leftovers, f"processes survived `toolkit down`: {leftovers}"


class Up:
    """`toolkit up` in the background, its output collected line by line."""

    def __init__(self, env: Env, *args: str, preflight: bool = False) -> None:
        inv = str(env.inventory)
        argv = ["up", "-p", PROFILE, "-i", inv, "--rehearse", *args]
        argv += [] if preflight else ["--skip-check"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit.cli", *argv],
            cwd=env.cwd,
            env={**env.env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        out = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in out], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=1))
            except queue.Empty:
                ended = self.proc.poll() is not None
                if ended or time.monotonic() > deadline:
                    pytest.fail(f"no {text!r} from `toolkit up` (ended: {ended}):\n{self.output}")

    def finish(self, timeout: float) -> tuple[int, str, float]:
        """Exit status, whole output and seconds since start; kills it past `timeout`."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"`toolkit up` still running after {timeout:.0f} s:\n{self.output}")
        time.sleep(0.2)  # the reader thread drains what is left
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return rc, self.output, time.monotonic() - self.started

    @property
    def output(self) -> str:
        return "".join(self.seen)


def run_id_of(text: str) -> str:
    found = re.search(r"· run (\S+) ·", text)
    assert found, text
    return found.group(1)


def record(fault: str, elapsed: float, output: str) -> None:
    """For the closing note: what toolkit printed, how long it took (`pytest -s`)."""
    keys = (
        "unreachable:",
        "failed:",
        "interrupted",
        "stopping",
        "error:",
        "✘",
        "stopped",
        "abandon",
    )
    said = [line for line in output.splitlines() if any(k in line for k in keys)]
    print(f"\n== {fault}: {elapsed:.1f} s\n" + "\n".join(said[-12:]))


def test_sshd_killed_during_readiness_fails_the_run_and_names_the_host(env: Env) -> None:
    h3 = env.hosts[2]
    up = Up(env, "--load-seconds", "60", "--timeout", "120")
    try:
        up.wait_for("waiting for 4 nodes")
        killed_at = time.monotonic()
        assert env.cluster.kill_sshd(h3)
        rc, out, _ = up.finish(timeout=90)
    finally:
        env.cluster.restart_sshd(h3)
    record("sshd killed during readiness", time.monotonic() - killed_at, out)
    assert rc != 0
    assert f"lost the SSH connection to {h3.name} during readiness" in out, out
    assert "READY" not in out and "starting the router" not in out
    assert f"{h3.name} could not be reached" in out
    others = [h for h in env.hosts if h is not h3]
    assert not run_processes(others)  # stopped on every host still reachable
    # What was left on the lost host: the printed command stops it once sshd is back.
    command = re.search(r"`(toolkit down --run \S+)`", out)
    assert command, out
    assert run_processes([h3])
    down = env.run(*command.group(1).split()[1:])
    assert down.returncode == 0, down.stdout + down.stderr
    assert not run_processes(env.hosts)


def test_link_down_during_readiness_ends_within_the_timeout(env: Env) -> None:
    h4 = env.hosts[3]
    timeout = 30.0
    up = Up(env, "--load-seconds", "120", "--timeout", str(timeout))
    try:
        up.wait_for("waiting for 4 nodes")
        cut_at = time.monotonic()
        h4.run(["ip", "link", "set", "eth0", "down"])
        # The promise: never more than 30 s past the readiness timeout, whatever the network.
        rc, out, _ = up.finish(timeout=timeout + 30)
    finally:
        h4.run(["ip", "link", "set", "eth0", "up"])
    record("link down during readiness", time.monotonic() - cut_at, out)
    assert rc != 0
    assert f"lost the SSH connection to {h4.name} during readiness" in out, out
    assert "READY" not in out
    assert not run_processes(env.hosts[:3])
    run_id = run_id_of(out)
    down = env.run("down", "--run", run_id)  # the link is back: the leftovers go too
    assert down.returncode == 0, down.stdout + down.stderr
    assert not run_processes(env.hosts)


PHASES = [
    # (phase, the line after which Ctrl-C comes, extra `up` arguments)
    ("preflight", "preflight: `toolkit check`", ()),
    ("readiness", "waiting for 4 nodes", ("--load-seconds", "60")),
    ("router start", "starting the router", ("--tpot-ms", "3000")),
]
assert PHASES


@pytest.mark.parametrize(("phase", "marker", "extra"), PHASES, ids=[p[0] for p in PHASES])
@pytest.mark.parametrize("signum", [signal.SIGINT], ids=["ctrl-c"])
def test_ctrl_c_at_any_phase_leaves_nothing_of_the_run(
    env: Env, phase: str, marker: str, extra: tuple[str, ...], signum: int
) -> None:
    up = Up(env, *extra, preflight=phase == "preflight")
    up.wait_for(marker)
    time.sleep(0.5)
    sent = time.monotonic()
    up.proc.send_signal(signum)
    rc, out, _ = up.finish(timeout=60)
    record(f"Ctrl-C during {phase}", time.monotonic() - sent, out)
    assert rc == 128 + signum, out
    assert f"interrupted during {phase}" in out, out
    assert "READY" not in out
    if phase == "preflight":
        assert "nothing was started" in out
    else:
        assert "stopping run" in out and re.search(r"run \S+ stopped", out), out
        for key in re.findall(r"changed: \[\S+\] sysctl ([\w.]+)", out):
            assert f"restore sysctl {key}" in out  # what this run tuned is put back
    assert not run_processes(env.hosts)
    for host in env.hosts:
        assert not SERVING_PORTS & listening(host)
        active = env.workdirs[host.name] / "active.json"
        assert not active.exists()  # the run's record on the host went with it


def test_a_second_ctrl_c_abandons_the_cleanup_and_names_the_command(env: Env) -> None:
    up = Up(env, "--load-seconds", "60")
    up.wait_for("waiting for 4 nodes")
    up.proc.send_signal(signal.SIGINT)
    up.wait_for("interrupted during readiness: stopping run", timeout=30)
    up.proc.send_signal(signal.SIGINT)
    rc, out, _ = up.finish(timeout=60)
    record("second Ctrl-C during the cleanup", 0.0, out)
    assert rc == 130, out
    command = re.search(r"cleanup abandoned:.* finish with: (toolkit down --run \S+)", out)
    assert command, out
    down = env.run(*command.group(1).split()[1:])
    assert down.returncode == 0, down.stdout + down.stderr
    assert not run_processes(env.hosts)


def test_sigterm_during_readiness_stops_the_run(env: Env) -> None:
    up = Up(env, "--load-seconds", "60")
    up.wait_for("waiting for 4 nodes")
    up.proc.send_signal(signal.SIGTERM)
    rc, out, _ = up.finish(timeout=60)
    assert rc == 128 + signal.SIGTERM, out
    assert "interrupted during readiness" in out
    assert not run_processes(env.hosts)


def test_sigterm_ends_logs_follow_and_leaves_no_tail(env: Env) -> None:
    up = env.up("--skip-check")
    assert up.returncode == 0, up.stdout + up.stderr
    follow = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "logs", "decode", "-f", "-n", "1"],
        cwd=env.cwd,
        env={**env.env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert follow.stdout is not None
    assert follow.stdout.readline().startswith("[tkt-h")  # streaming
    follow.send_signal(signal.SIGTERM)
    out = follow.communicate(timeout=30)[0]
    assert follow.returncode == 0, out
    assert "stopped following" in out
    tails = "".join(h.run("pgrep -a tail || true").stdout for h in env.hosts[2:4])
    deadline = time.monotonic() + 10  # `tail --pid` notices its sshd parent within 1 s
    while str(env.workdirs[env.hosts[2].name]) in tails and time.monotonic() < deadline:
        time.sleep(0.2)
        tails = "".join(h.run("pgrep -a tail || true").stdout for h in env.hosts[2:4])
    assert str(env.workdirs[env.hosts[2].name]) not in tails


def test_check_and_up_catch_a_read_only_workdir(env: Env) -> None:
    h2 = env.hosts[1]
    with env.cluster.read_only(h2, env.workdirs[h2.name]):
        started = time.monotonic()
        check = env.run("check", "-p", PROFILE, "-i", str(env.inventory), "--rehearse")
        record("read-only workdir, check", time.monotonic() - started, check.stdout)
        assert check.returncode == 1, check.stdout + check.stderr
        assert re.search(rf"{env.workdirs[h2.name]}\S* .*is not writable by uid 0", check.stdout)
        assert "Read-only file system" in check.stdout
        up = env.run("up", "-p", PROFILE, "-i", str(env.inventory), "--rehearse")
        assert up.returncode != 0
        assert "preflight check failed" in up.stdout + up.stderr and "OSError" not in up.stdout
    assert not run_processes(env.hosts)


def _active(env: Env) -> dict[str, str | None]:
    out = {}
    for host in env.hosts:
        path = env.workdirs[host.name] / "active.json"
        out[host.name] = json.loads(path.read_text())["run_id"] if path.exists() else None
    return out


def test_a_stale_runs_down_leaves_the_live_run_intact(env: Env) -> None:
    old = env.up("--skip-check")
    assert old.returncode == 0, old.stdout + old.stderr
    old_id = run_id_of(old.stdout)
    assert env.run("down").returncode == 0
    live = env.up("--skip-check")
    assert live.returncode == 0, live.stdout + live.stderr
    live_id = run_id_of(live.stdout)

    stale = env.run("down", "--run", old_id)
    assert stale.returncode == 0, stale.stdout + stale.stderr
    assert set(_active(env).values()) == {live_id}
    assert "active run is " + live_id in stale.stdout
    status = env.run("status")
    assert status.returncode == 0, status.stdout  # still serving

    # From the hosts alone, the named run is found and stopped (-i is not ignored).
    by_hosts = env.run("down", "-i", str(env.inventory), "--run", live_id)
    assert by_hosts.returncode == 0, by_hosts.stdout + by_hosts.stderr
    # (A prefill follower may exit on its own once its leader is stopped: "nothing to stop".)
    assert f"[{env.hosts[0].name}] stop — stopped" in by_hosts.stdout, by_hosts.stdout
    assert set(_active(env).values()) == {None}
    assert not run_processes(env.hosts)


def _listeners_of(host: TestHost, port: int) -> list[int]:
    """PIDs holding `port` open on `host` (whatever they did to their argv or environment)."""
    out = host.run(["ss", "-Hltnp", f"sport = :{port}"]).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead router waits for this machine's init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_down_stops_the_routers_real_process_and_deletes_launch_scripts(env: Env) -> None:
    up = env.up("--skip-check", "--set", "env.HF_TOKEN=hf_DownDeletesThis123")
    assert up.returncode == 0, up.stdout + up.stderr
    h1 = env.hosts[0]
    routers = _listeners_of(h1, 6688)
    assert routers, "no router process found"
    run_dir = next((env.workdirs[h1.name] / "runs").iterdir())
    assert (run_dir / "router.sh").exists() and (run_dir / "prefill0.0.sh").exists()

    down = env.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p for p in routers if _running(p)], "the router survived"
    assert not list(run_dir.glob("*.sh"))  # the scripts held the secret
    assert (run_dir / "router.log").is_file() and (run_dir / "prefill0.0.log").is_file()
    assert not SERVING_PORTS & listening(h1)
