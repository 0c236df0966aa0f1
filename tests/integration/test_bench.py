"""`toolkit bench` against a rehearsed cluster on namespace hosts: the real router, the real
bench_serving, a tiny offline tokenizer and dataset built on the bench host."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster
from toolkit_cli import HOST_PYTHON, kill_leftovers, toolkit

pytestmark = pytest.mark.integration
PROFILE = "a3-1p1d-64k"  # SLO: median TPOT <= 50 ms
# A small shape so each point takes seconds: 64 output tokens at 40 ms ≈ 2.6 s a request.
SHAPE = (
    "--num-prompts",
    "4",
    "--max-concurrency",
    "2",
    "--set",
    "bench.random-input-len=512",
    "--set",
    "bench.random-output-len=64",
)


class Run:
    def __init__(self, cluster: TestCluster, env: dict, tmp: Path, workdirs: dict) -> None:
        self.env, self.cwd = env, tmp
        self.inventory = cluster.write_inventory(
            tmp / "inv.yaml",
            {"prefill": cluster.hosts[:2], "decode": cluster.hosts[2:4]},
            {"model_path": "/models/glm-5.1-w4a8", "python": HOST_PYTHON},
            workdirs=workdirs,
        )

    def __call__(self, *args: str, timeout: float = 400):
        return toolkit(*args, env=self.env, cwd=self.cwd, timeout=timeout)

    def up(self, *extra: str) -> None:
        up = self(
            "up",
            "-p",
            PROFILE,
            "-i",
            str(self.inventory),
            "--rehearse",
            "--load-seconds",
            "1",
            *extra,
        )
        assert up.returncode == 0, up.stdout + up.stderr


@pytest.fixture
def run(ssh_cluster: TestCluster, ssh_env: dict, tmp_path: Path, host_workdirs) -> Iterator[Run]:
    r = Run(ssh_cluster, ssh_env, tmp_path, host_workdirs)
    try:
        yield r
    finally:
        r("down", "-i", str(r.inventory), timeout=120)
        kill_leftovers(ssh_cluster.hosts)


def _result(stdout: str, cwd: Path) -> dict:
    path = cwd / re.search(r"result: (\S+\.jsonl)", stdout).group(1)
    return json.loads(path.read_text().strip().splitlines()[-1].replace("Infinity", "1e999"))


def test_pass_with_metrics_matching_the_engine_timing_then_a_sweep(run: Run) -> None:
    run.up("--tpot-ms", "40")
    bench = run("bench", *SHAPE)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    # The value column is right-justified to the widest value, so the gap before "4 / 4" varies.
    assert "PASS" in bench.stdout, bench.stdout
    assert re.search(r"completed / requested\s+4 / 4\b", bench.stdout), bench.stdout
    result = _result(bench.stdout, run.cwd)
    assert result["completed"] == 4 and result["total_output_tokens"] == 4 * 64
    assert abs(result["median_tpot_ms"] - 40) <= 0.2 * 40

    sweep = run("bench", *SHAPE, "--sweep", "max_concurrency=1,2,4")
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "saturation" in sweep.stdout.lower()
    report = run.cwd / re.search(r"report: (\S+report\.md)", sweep.stdout).group(1)
    text = report.read_text()
    for label in ("1", "2", "4"):
        assert re.search(rf"\|\s*{label}\s*\|", text), text
    png = report.parent / "sweep.png"
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 600 and height >= 400
    assert (report.parent / "report.html").read_text().count("data:image/png;base64,") == 2
    assert (report.parent / "per-card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fail_when_the_engine_is_slower_than_the_target(run: Run) -> None:
    run.up("--tpot-ms", "70")
    bench = run("bench", *SHAPE)
    assert bench.returncode == 1
    assert re.search(r"FAIL\s+median TPOT 7\d(\.\d+)? ms > 50 ms", bench.stdout), bench.stdout


def test_truncated_streams_are_invalid_not_pass(run: Run) -> None:
    # The router cuts every request after 2 s; a request needs 64 × 40 ms ≈ 2.6 s (the
    # 32-token warmup fits). Cut streams come back short or broken, never as a PASS.
    run.up("--tpot-ms", "40", "--set", "router.args.request-timeout-secs=2")
    bench = run("bench", *SHAPE)
    assert bench.returncode == 1
    assert "INVALID" in bench.stdout and "PASS" not in bench.stdout.replace("PASSED", "")
    assert re.search(r"fewer|short|completed [0-3] of 4|bench_serving failed", bench.stdout)
