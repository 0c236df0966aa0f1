"""`toolkit up` / `status` / `logs` / `down` over real SSH against namespace hosts.

Each test drives the CLI as a user would, with the rehearsal engine standing in for the
model server and the real sglang-router in front of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import stat
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


class Env:
    """One test's inventory, environment and working directory."""

    def __init__(self, cluster: TestCluster, hosts: list[TestHost], env: dict, tmp: Path):
        self.cluster, self.hosts, self.env, self.cwd = cluster, hosts, env, tmp

    def run(self, *args: str, timeout: float = 240):
        return toolkit(*args, env=self.env, cwd=self.cwd, timeout=timeout)

    def up(self, *extra: str, inventory: Path | None = None, profile: str = PROFILE):
        inv = str(inventory or self.inventory)
        return self.run("up", "-p", profile, "-i", inv, "--rehearse", "--load-seconds", "1", *extra)


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
        {"model_path": "/models/glm-5.1-w4a8", "python": HOST_PYTHON},
        workdirs=host_workdirs,
    )
    try:
        yield e
    finally:
        e.run("down", "-i", str(e.inventory), timeout=120)
        leftovers = kill_leftovers(ssh_cluster.hosts)
        assert not leftovers, f"processes survived `toolkit down`: {leftovers}"


def listening(host: TestHost) -> set[int]:
    out = host.run("ss -Hltn").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def test_up_status_logs_down(env: Env) -> None:
    up = env.up()
    assert up.returncode == 0, up.stdout + up.stderr
    assert re.search(r"READY — 127\.0\.0\.1:6688 on tkt-h1 answered: '.+'", up.stdout)
    # The NIC was not in the inventory: detected and shown.
    assert "detected tkt-" in up.stdout or "detected eth" in up.stdout or "detected" in up.stdout
    h1, _h2, h3, _h4 = env.hosts
    assert {8000, 8998, 5000, 6688}.issubset(listening(h1))
    assert 8001 in listening(h3) and 5000 in listening(h3)

    status = env.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("prefill0.0", "prefill0.1", "decode0.0", "decode0.1", "router"):
        assert re.search(rf"{name}\s.*yes\s+│\s+200", status.stdout), status.stdout

    logs = env.run("logs", "decode0.1", "-n", "5")
    assert logs.returncode == 0
    assert "decode0.1.log" in logs.stdout and "GET /health" in logs.stdout

    # Launch scripts are owner-only and sit in the run directory under the workdir.
    run_dir = next((env.workdirs[h1.name] / "runs").iterdir())
    mode = stat.S_IMODE((run_dir / "prefill0.0.sh").stat().st_mode)
    assert mode == 0o700

    down = env.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stop — stopped" in down.stdout
    assert not run_processes(env.hosts)
    for host in env.hosts:
        assert not {8000, 8001, 8998, 5000, 6688} & listening(host)
    assert (run_dir / "prefill0.0.log").is_file()  # logs are kept

    again = env.run("down")
    assert again.returncode == 0
    # The down playbook stops the router first, then each host's processes: 1 + 4 looks.
    assert again.stdout.count("nothing to stop") == 5


def _tails_of(directory: Path) -> list[int]:
    """PIDs of `tail` processes reading files under `directory` (namespaces share PIDs)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "tail" and str(directory).encode() in b" ".join(argv):
                found.append(int(entry))
    return found


def test_logs_follow_streams_new_lines_and_leaves_nothing_behind(env: Env) -> None:
    up = env.up()
    assert up.returncode == 0, up.stdout + up.stderr
    h3 = env.hosts[2]
    follow = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "logs", "decode0.0", "-f", "-n", "2"],
        cwd=env.cwd,
        env={**env.env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in follow.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=60)
        assert first.startswith(f"[{h3.name}] "), first
        # A request made now must show up in the stream: the log is followed, not dumped.
        marker = "/health?follow-marker"
        h3.run([sys.executable, "-c", _GET, h3.address, "8001", marker])
        seen = [first]
        while not any(marker in line for line in seen):
            seen.append(lines.get(timeout=20))
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=30)
    assert follow.returncode in (0, 130)
    # `tail -F` on the host ends with the SSH connection (within its 1 s --pid poll).
    deadline = time.monotonic() + 10
    while _tails_of(env.workdirs[h3.name]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _tails_of(env.workdirs[h3.name])


# http.client, not urllib: no proxy from the environment for a request inside the namespace.
_GET = (
    "import sys, http.client; c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), "
    "timeout=10); c.request('GET', sys.argv[3]); c.getresponse().read()"
)


def test_secrets_reach_only_the_owner_only_script(env: Env) -> None:
    secret = "hf_TopSecretValue123"
    up = env.up("--set", f"env.HF_TOKEN={secret}")
    assert up.returncode == 0, up.stdout + up.stderr
    h1 = env.hosts[0]
    run_dir = next((env.workdirs[h1.name] / "runs").iterdir())
    script = run_dir / "prefill0.0.sh"
    assert secret in script.read_text()
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    state = Path(env.env["HOME"]) / ".local" / "state" / "toolkit"
    written = [p for p in state.rglob("*") if p.is_file()] + [run_dir / "run.json"]
    for path in written:
        assert secret not in path.read_text(), path
    assert secret not in up.stdout + up.stderr
    plan = env.run(
        "plan",
        "-p",
        PROFILE,
        "-i",
        str(env.inventory),
        "--format",
        "json",
        "--set",
        f"env.HF_TOKEN={secret}",
    )
    assert secret not in plan.stdout and json.loads(plan.stdout)["nodes"][0]["env"]["HF_TOKEN"]


def test_a_dying_node_is_reported_at_once_and_the_run_stopped(env: Env) -> None:
    # Decode nodes die 1 s into a 30 s "weight load"; the readiness timeout is 300 s.
    up = env.run(
        "up",
        "-p",
        PROFILE,
        "-i",
        str(env.inventory),
        "--rehearse",
        "--load-seconds",
        "30",
        "--timeout",
        "300",
        "--set",
        "roles.decode.env.TOOLKIT_REHEARSAL_FAIL_AFTER_SECONDS=1",
    )
    assert up.returncode != 0
    out = up.stdout + up.stderr
    # Both decode nodes die at 1 s; whichever is seen first is the failure, the rest of the
    # run is stopped because of it.
    assert re.search(r"decode0\.[01] on tkt-h[34] failed", out), out
    assert "stopped: another node failed" in out
    assert "command:" in out and "--disaggregation-mode decode" in out
    assert "log lines" in out
    assert "failed and was stopped" in out
    assert not run_processes(env.hosts)


def test_second_up_refuses_and_names_the_run(env: Env) -> None:
    first = env.up()
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = re.search(r"run (\S+)", first.stdout).group(1)
    second = env.up("--skip-check")
    assert second.returncode != 0
    assert f"toolkit run {run_id} is running here" in second.stdout
    assert "nothing was changed" in second.stdout + second.stderr


def test_down_works_from_the_hosts_when_local_state_is_lost(env: Env) -> None:
    up = env.up()
    assert up.returncode == 0, up.stdout + up.stderr
    shutil.rmtree(Path(env.env["HOME"]) / ".local" / "state")
    lost = env.run("down")
    assert "nothing to stop" in lost.stdout  # no local record, and said so
    down = env.run("down", "-i", str(env.inventory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not run_processes(env.hosts)


def test_unreachable_host_is_reported_and_nothing_changes(env: Env, tmp_path: Path) -> None:
    dead = env.cluster.unreachable_host()
    inv = env.cluster.write_inventory(
        tmp_path / "dead.yaml",
        {"prefill": env.hosts[:2], "decode": [env.hosts[2], dead]},
        {"model_path": "/m", "python": HOST_PYTHON},
        workdirs=env.workdirs,
    )
    up = env.up(inventory=inv)
    assert up.returncode != 0
    assert re.search(rf"unreachable: \[{dead.name}\] connect", up.stdout)
    assert re.search(r"tkt-h1\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+0\s+│\s+0", up.stdout) is None
    assert "unreachable hosts: nothing was changed" in up.stdout + up.stderr
    assert not run_processes(env.hosts)


def test_check_mode_and_nic_errors(env: Env, tmp_path: Path) -> None:
    check = env.up("--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "check mode: nothing was changed" in check.stdout
    assert not run_processes(env.hosts)
    inv = env.cluster.write_inventory(
        tmp_path / "badnic.yaml",
        {"prefill": env.hosts[:2], "decode": env.hosts[2:4]},
        {"model_path": "/m", "python": HOST_PYTHON, "nic": "enp99s0"},
        workdirs=env.workdirs,
    )
    bad = env.up("--skip-check", inventory=inv)  # the executor guards on its own too
    assert bad.returncode != 0
    assert "failed: [tkt-h1] nic — interface enp99s0 does not exist on this host" in bad.stdout


def test_unknown_host_key_is_refused_unless_accepted(env: Env) -> None:
    (Path(env.env["HOME"]) / ".ssh" / "known_hosts").write_text("")
    refused = env.up("--check")
    assert refused.returncode != 0
    assert "host key unknown" in refused.stdout and "--accept-new-host-keys" in refused.stdout
    accepted = env.up("--check", "--accept-new-host-keys")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    known = (Path(env.env["HOME"]) / ".ssh" / "known_hosts").read_text()
    assert all(h.address in known for h in env.hosts)


def test_become_through_sudo_for_a_non_root_login(env: Env, tmp_path: Path) -> None:
    user = env.cluster.create_sudo_user("become")
    for path in env.workdirs.values():
        os.chown(path, *_ids(user))
    inv = env.cluster.write_inventory(
        tmp_path / "sudo.yaml",
        {"prefill": env.hosts[:2], "decode": env.hosts[2:4]},
        {
            "model_path": "/m",
            "python": HOST_PYTHON,
            "ansible_user": user,
            "ansible_become": True,
        },
        workdirs=env.workdirs,
    )
    check = env.up("--check", "--skip-check", inventory=inv)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sysctl vm.swappiness" in check.stdout


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def test_2p1d_on_six_hosts_routes_through_both_prefill_leaders(
    env: Env, ssh_cluster: TestCluster, tmp_path: Path
) -> None:
    hosts = ssh_cluster.hosts[:6]
    inv = ssh_cluster.write_inventory(
        tmp_path / "2p1d.yaml",
        {"prefill": hosts[:4], "decode": hosts[4:6]},
        {"model_path": "/m", "python": HOST_PYTHON},
        workdirs=env.workdirs,
    )
    up = env.up(inventory=inv, profile="a3-2p1d-128k-prefix90")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "READY — 127.0.0.1:6688 on tkt-h1 answered" in up.stdout
        router = next((env.workdirs["tkt-h1"] / "runs").iterdir()) / "router.sh"
        text = router.read_text()
        p1, p3 = hosts[0].address, hosts[2].address
        assert f"--prefill http://{p1}:8000 8998 --prefill http://{p3}:8000 8999" in text
        status = env.run("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("yes") == 7  # 6 nodes and the router
    finally:
        down = env.run("down")
        assert down.returncode == 0, down.stdout
    assert not run_processes(hosts)
    for host in hosts:
        assert not {8000, 8001, 8998, 8999, 5000, 6688} & listening(host)


def test_mixed_two_node_profile_serves_from_rank_0(
    env: Env, ssh_cluster: TestCluster, tmp_path: Path
) -> None:
    inv = ssh_cluster.write_inventory(
        tmp_path / "mixed.yaml",
        {"mixed": env.hosts[:2]},
        {"model_path": "/m", "python": HOST_PYTHON},
        workdirs=env.workdirs,
    )
    up = env.up(inventory=inv, profile="a3-mixed-3k5")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "READY — 127.0.0.1:6688 on tkt-h1 answered" in up.stdout
    log = next((env.workdirs["tkt-h2"] / "runs").iterdir()) / "mixed0.1.log"
    assert f"rendezvous at {env.hosts[0].address}:5000" in log.read_text()
    assert env.run("down").returncode == 0
    assert not run_processes(env.hosts[:2])


def test_an_injection_attempt_in_the_inventory_stays_a_literal_path(
    env: Env, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = f"/m; touch {marker}"
    inv = env.cluster.write_inventory(
        tmp_path / "evil.yaml",
        {"prefill": env.hosts[:2], "decode": env.hosts[2:4]},
        {"model_path": evil, "python": HOST_PYTHON},
        workdirs=env.workdirs,
    )
    up = env.up(inventory=inv)
    assert up.returncode == 0, up.stdout + up.stderr
    assert not marker.exists()
    log = next((env.workdirs["tkt-h1"] / "runs").iterdir()) / "prefill0.0.log"
    assert f"--model-path '{evil}'" in log.read_text() or evil in log.read_text()
    info = env.run("logs", "prefill0.0", "-n", "200")
    assert evil in info.stdout
    assert not marker.exists()
