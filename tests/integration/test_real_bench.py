"""`toolkit bench` against real engines (CPU builds, the tiny model) on namespace hosts, with
the seeds' `random` dataset shape and no internet (the hosts have no route out).

- a vLLM host has no sglang: the bench runs vLLM's own client, `vllm bench serve`, with the
  profile's bench_serving flags translated, and its result is judged like any other;
- an SGLang host benches with `sglang.benchmark.serving`; `random` needs ShareGPT text and
  the hub cannot be reached, so the prompts come from the corpus toolkit writes there.

One engine start each (2 shared cores); a few prompts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import test_real_engines as real
from test_real_engines import MODEL, Cluster

pytestmark = pytest.mark.integration
# The real-engine tests' fixtures: each engine's venv python (skipped, or failed in CI, when
# not built) and the rig of namespace hosts, with `down` and a leftover check after each test.
rig, sglang_python, vllm_python = real.rig, real.sglang_python, real.vllm_python

# The seeds' shape (dataset random, fixed lengths), sized for the tiny model's 512 tokens.
SEED_SHAPE = (
    "--num-prompts",
    "4",
    "--max-concurrency",
    "2",
    "--set",
    "bench.dataset-name=random",
    "--set",
    "bench.random-input-len=64",
    "--set",
    "bench.random-output-len=16",
    "--set",
    "bench.random-range-ratio=1",
)


def _result(cluster: Cluster, stdout: str) -> dict:
    path = cluster.tmp / re.search(r"result: (\S+\.jsonl)", stdout).group(1)
    return json.loads(path.read_text().strip().splitlines()[-1])


def _has(python: Path, module: str) -> bool:
    site = next(python.parent.parent.glob("lib/python3*/site-packages"))
    return (site / module).is_dir()


def test_vllm_host_benches_with_vllms_own_client(rig: Cluster, vllm_python: Path) -> None:
    cluster = rig
    assert not _has(vllm_python, "sglang")  # the point: nothing of SGLang on this host
    inventory = str(cluster.write({"mixed": cluster.hosts[:1]}, vllm_python))
    up = cluster("up", "-p", "cpu-vllm", "-i", inventory, "--skip-check")
    assert up.returncode == 0, up.stdout + up.stderr

    bench = cluster("bench", *SEED_SHAPE, "--slo", "median_tpot_ms<=5000")
    out = bench.stdout + bench.stderr
    assert bench.returncode == 0, out
    assert re.search(r"client: vllm bench serve \(vllm 0\.32\.0\S*\): the engine's own client", out)
    assert "-m vllm.entrypoints.cli.main bench serve" in out and "--ignore-eos" in out, out
    assert "random prompts need no dataset file" in out, out
    assert re.search(r"completed / requested\s+4 / 4\b", out), out
    assert re.search(r"PASS\s+median TPOT [\d.]+ ms ≤ 5,000 ms", out), out
    assert re.search(r"output throughput per card \(1 cards\)\s+[\d.,]+ tok/s", out), out
    result = _result(cluster, bench.stdout)
    assert result["client"] == "vllm" and result["cards"] == 1
    # Every request ran to its 16 tokens (ignore-EOS, as bench_serving does by default).
    assert result["output_lens"] == [16] * 4 and result["total_output_tokens"] == 64
    assert result["median_e2el_ms"] > 0 and "p95_ttft_ms" in result  # bench_serving's stats


def test_sglang_host_benches_random_offline(rig: Cluster, sglang_python: Path) -> None:
    cluster = rig
    inventory = str(cluster.write({"mixed": cluster.hosts[:1]}, sglang_python))
    up = cluster("up", "-p", "cpu-sglang", "-i", inventory, "--skip-check")
    assert up.returncode == 0, up.stdout + up.stderr

    bench = cluster("bench", *SEED_SHAPE)
    out = bench.stdout + bench.stderr
    assert bench.returncode == 0, out
    assert re.search(r"client: sglang bench_serving \(sglang 0\.5\.23\)", out), out
    assert "-m sglang.benchmark.serving" in out, out
    assert "offline ShareGPT-format corpus toolkit generated on the bench host" in out, out
    assert "hub cannot be reached" in out, out
    assert re.search(r"completed / requested\s+4 / 4\b", out), out
    assert "PASS" in out, out
    result = _result(cluster, bench.stdout)
    assert result["client"] == "sglang" and result["dataset_name"] == "random"
    assert result["output_lens"] == [16] * 4
    assert "offline" in result["dataset_source"] and str(MODEL) in result["command"]
