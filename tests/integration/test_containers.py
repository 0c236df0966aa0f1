"""Serving nodes in containers: `up --rehearse` / `status` / `logs` / `down` with real podman.

The hosts are network namespaces whose sshd was started with `nsenter --net` (see
`TestCluster(enter=...)`), so an SSH session there can run podman, and `--network host`
puts each container on that host's own address, as on a real machine. The image is the
local test image `scripts/container-test-image.sh` builds (Debian 12 + python3): the
rehearsal engine is stdlib-only and reaches the container through the workdir mount.
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
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, TestHost, missing_tools, sweep_stale
from toolkit_cli import HOST_PYTHON, kill_leftovers, run_processes, toolkit

pytestmark = pytest.mark.integration
PROFILE = "a3-1p1d-64k"
IMAGE = os.environ.get("TOOLKIT_TEST_IMAGE", "localhost/tk-test:bookworm")
SECRET = "hf_containertest_5ecret"


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "podman namespace hosts need root"
    if missing_tools() or shutil.which("podman") is None or shutil.which("nsenter") is None:
        return "podman, nsenter or the namespace tools are missing (scripts/setup.sh)"
    if _podman("image", "exists", IMAGE).returncode != 0:
        return f"test image {IMAGE} missing (scripts/container-test-image.sh builds it)"
    return None


@pytest.fixture(scope="module")
def podman_cluster() -> Iterator[TestCluster]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"container tests must run in CI: {reason}")
        pytest.skip(reason)
    sweep_stale()
    cluster = TestCluster(4, enter="nsenter").start()
    try:
        yield cluster
    finally:
        for host in cluster.hosts:  # last resort: containers a failed test left behind
            for name in _containers(host):
                _podman("rm", "-f", name)
        cluster.teardown()


def _containers(host: TestHost, run_id: str | None = None) -> list[str]:
    filters = ["--filter", f"label=toolkit.host={host.name}@{host.address}"]
    if run_id:
        filters += ["--filter", f"label=toolkit.run={run_id}"]
    out = _podman("ps", "-a", *filters, "--format", "{{.Names}}").stdout
    return out.split()


class Env:
    def __init__(self, cluster: TestCluster, env: dict[str, str], tmp: Path) -> None:
        self.cluster, self.hosts, self.env, self.cwd = cluster, cluster.hosts, env, tmp
        self.workdirs = cluster.fresh_workdirs(tmp.name)
        self.inventory = cluster.write_inventory(
            tmp / "inv.yaml",
            {"prefill": self.hosts[:2], "decode": self.hosts[2:4]},
            {"model_path": "/models/glm-5.1-w4a8", "python": HOST_PYTHON},
            workdirs=self.workdirs,
        )

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return toolkit(*args, env=self.env, cwd=self.cwd, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "up", "-p", PROFILE, "-i", str(self.inventory), "--rehearse",
            "--load-seconds", "1", "--set", "container.runtime=podman",
            "--set", f"container.image={IMAGE}", *extra,
        )  # fmt: skip


@pytest.fixture
def env(podman_cluster: TestCluster, tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copyfile(podman_cluster.known_hosts, home / ".ssh" / "known_hosts")
    variables = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    variables.update(HOME=str(home), TOOLKIT_STATE_DIR=str(tmp_path / "state"))
    e = Env(podman_cluster, variables, tmp_path)
    try:
        yield e
    finally:
        e.run("down", "-i", str(e.inventory), timeout=180)
        assert not kill_leftovers(podman_cluster.hosts), "processes survived `toolkit down`"


def _listening(host: TestHost) -> set[int]:
    out = host.run("ss -Hltn").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def _cmdlines() -> str:
    text = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                text.append(Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"))
    return "\n".join(text)


def test_up_in_podman_containers_status_logs_down(env: Env) -> None:
    up = env.up("--set", f"env.HF_TOKEN={SECRET}")
    out = up.stdout + up.stderr
    assert up.returncode == 0, out
    assert re.search(r"READY — 127\.0\.0\.1:6688 on tkt-h1 answered: '.+'", up.stdout), out
    assert "podman — podman version" in up.stdout, out  # the runtime preflight
    run_id = re.search(r"run (\S+)", up.stdout).group(1)
    h1, h2, h3, h4 = env.hosts
    # One named, labelled container per node, listening on its host's own address.
    for host, node in ((h1, "prefill0.0"), (h2, "prefill0.1"), (h3, "decode0.0")):
        assert _containers(host, run_id) == [f"tk-{run_id}-{node}"]
    assert {8000, 8998, 5000}.issubset(_listening(h1)) and 8001 in _listening(h3)
    inspect = json.loads(_podman("inspect", f"tk-{run_id}-decode0.1").stdout)[0]
    assert inspect["HostConfig"]["NetworkMode"] == "host"
    assert inspect["Config"]["Labels"]["toolkit.node"] == "decode0.1"
    # The secret reached the container through the owner-only env file, never a command line.
    assert f"HF_TOKEN={SECRET}" in inspect["Config"]["Env"]
    assert SECRET not in _cmdlines()
    env_file = env.workdirs[h4.name] / "runs" / run_id / "decode0.1.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    status = env.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("running") >= 4, status.stdout
    assert f"tk-{run_id}-prefill0.1" in status.stdout

    logs = env.run("logs", "decode0.1", "-n", "5")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    assert "decode0.1 (podman logs)" in logs.stdout and "GET /health" in logs.stdout

    _follow_shows_a_new_request(env, h4)

    down = env.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped and removed 1 container(s)" in down.stdout
    assert f"logs --tail 2 -f tk-{run_id}" not in _cmdlines().replace("\0", " ")
    for host in env.hosts:
        assert not _containers(host, run_id)
        assert not {8000, 8001, 8998, 5000, 6688} & _listening(host)
    assert not run_processes(env.hosts)
    assert not env_file.exists()  # its secrets go with the run
    again = env.run("down")
    assert again.returncode == 0
    assert again.stdout.count("no container of the run") == 4, again.stdout


def _follow_shows_a_new_request(env: Env, host: TestHost) -> None:
    """`logs -f` streams the runtime's log: a request made now shows up in it."""
    follow = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "logs", "decode0.1", "-f", "-n", "2"],
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
        assert first.startswith(f"[{host.name} decode0.1] "), first
        marker = "/health?container-follow-marker"
        host.run([sys.executable, "-c", _GET, host.address, "8001", marker])
        seen = [first]
        while not any(marker in line for line in seen):
            seen.append(lines.get(timeout=20))
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=30)
    assert follow.returncode in (0, 130)


# http.client, not urllib: no proxy from the environment for a request inside the namespace.
_GET = (
    "import sys, http.client; c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), "
    "timeout=10); c.request('GET', sys.argv[3]); c.getresponse().read()"
)


def test_a_container_that_exits_during_startup_fails_up_with_its_log(env: Env) -> None:
    up = env.up(
        "--timeout", "120", "--set", "roles.decode.env.TOOLKIT_REHEARSAL_FAIL_AFTER_SECONDS=1",
    )  # fmt: skip
    out = up.stdout + up.stderr
    assert up.returncode != 0, out
    assert re.search(r"decode0\.[01] on tkt-h[34] failed", out), out
    assert "log lines" in out and "failed and was stopped" in out
    assert "Simulated crash after 1" in out  # the container's own output, in the panel
    run_id = re.search(r"run (\S+)", up.stdout).group(1)
    for host in env.hosts:
        assert not _containers(host, run_id), out
    assert not run_processes(env.hosts)


def test_a_container_of_an_older_run_is_named_before_anything_starts(env: Env) -> None:
    h1 = env.hosts[0]
    stale = "tk-20261130-000000-old-dead-prefill0.0"
    made = _podman(
        "create", "--name", stale, "--label", f"toolkit.host={h1.name}@{h1.address}",
        "--label", "toolkit.run=20261130-000000-old-dead", IMAGE, "true",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        up = env.up()
        out = up.stdout + up.stderr
        assert up.returncode != 0, out
        assert f"container {stale} of an older run is still here" in out, out
        assert "container preflight failed: nothing was started" in out
        assert not run_processes(env.hosts)
    finally:
        _podman("rm", "-f", stale)


def test_seed_002_rehearses_in_its_image_with_podman(
    podman_cluster: TestCluster, env: Env, tmp_path: Path
) -> None:
    """`up -p b200-glm5-fp8-vllm --rehearse` with the seed's image name, options and flags
    (a local image under that name stands in: no registry is reachable)."""
    seed_image = "docker.io/vllm/vllm-openai:v0.16.0"
    assert _podman("tag", IMAGE, seed_image).returncode == 0
    h1 = podman_cluster.hosts[0]
    inventory = podman_cluster.write_inventory(
        tmp_path / "mixed.yaml", {"mixed": [h1]}, {"python": HOST_PYTHON},
        workdirs=env.workdirs,
    )  # fmt: skip
    try:
        up = env.run(
            "up", "-p", "b200-glm5-fp8-vllm", "-i", str(inventory), "--rehearse",
            "--load-seconds", "1", "--set", "container.runtime=podman",
        )  # fmt: skip
        out = up.stdout + up.stderr
        assert up.returncode == 0, out
        assert "READY" in up.stdout and "image vllm/vllm-openai:v0.16.0 present" in out, out
        run_id = re.search(r"run (\S+)", up.stdout).group(1)
        (name,) = _containers(h1, run_id)
        config = json.loads(_podman("inspect", name).stdout)[0]
        args = config["Args"]
        # The seed's flags reach the engine inside the seed's image, after the engine path.
        assert args[-8:] == [
            "zai-org/GLM-5-FP8", "--max-model-len", "32768", "--gpu-memory-utilization",
            "0.90", "--trust-remote-code", "--tensor-parallel-size", "8",
        ]  # fmt: skip
        assert config["ImageName"] == seed_image
        # As run (podman 4.3's HostConfig.IpcMode misreports --ipc=host as shareable).
        created = config["Config"]["CreateCommand"]
        assert created[:2] == ["podman", "run"] and "--ipc=host" in created
        assert "--gpus" not in created  # a rehearsal hands over no GPUs
        down = env.run("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not _containers(h1, run_id)
    finally:
        _podman("untag", seed_image, seed_image)


def test_check_mode_then_down_from_the_hosts_when_local_state_is_lost(env: Env) -> None:
    check = env.up("--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"image {IMAGE} present" in check.stdout and "nothing was started" in check.stdout
    # `toolkit check` has a container row; it pulls nothing.
    absent = "localhost/tk-absent:1"
    report = env.run(
        "check", "-p", PROFILE, "-i", str(env.inventory), "--rehearse", "--format", "json",
        "--set", "container.runtime=podman", "--set", f"container.image={absent}",
    )  # fmt: skip
    assert report.stdout.startswith("{"), report.stdout + report.stderr
    cells = [f for f in json.loads(report.stdout)["findings"] if f["check"] == "container"]
    assert len(cells) == 4 and all(c["status"] == "ok" for c in cells), report.stdout
    assert all(c["summary"] == f"would pull {absent}" for c in cells)
    assert "podman version" in cells[0]["detail"]
    assert _podman("image", "exists", absent).returncode != 0
    up = env.up()
    assert up.returncode == 0, up.stdout + up.stderr
    run_id = re.search(r"run (\S+)", up.stdout).group(1)
    shutil.rmtree(env.cwd / "state")
    down = env.run("down", "-i", str(env.inventory))
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("stopped and removed 1 container(s)") == 4, down.stdout
    for host in env.hosts:
        assert not _containers(host, run_id)
        assert not {8000, 8001, 8998, 5000, 6688} & _listening(host)
    assert not run_processes(env.hosts)


def test_an_image_that_cannot_be_pulled_stops_up_before_launch(env: Env) -> None:
    # localhost has no registry: the pull is tried on every host and fails with its reason.
    up = env.up("--set", "container.image=localhost/tk-no-such-image:1")
    out = up.stdout + up.stderr
    assert up.returncode != 0, out
    assert out.count("could not pull localhost/tk-no-such-image:1") == 4, out
    assert "connection refused" in out and "container preflight failed" in out
    assert not run_processes(env.hosts)
