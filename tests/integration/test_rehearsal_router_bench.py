"""A rehearsal PD pair behind the REAL sglang-router, measured by the REAL sglang.bench_serving.

This is the contract `toolkit up --rehearse` relies on: if the router accepts the engines as
workers and bench_serving's numbers match the configured timing, a rehearsal exercises the
same wiring as the real cluster. Loopback only (127.0.0.1), offline (HF_HUB_OFFLINE=1, a tiny
local tokenizer, a local ShareGPT file), every process stopped by the module fixture.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.rehearsal import (
    LOOPBACK,
    Processes,
    free_port,
    get_json,
    loopback_env,
    post_json,
    wait_status,
)
from toolkit.rehearsal.dataset import write_sharegpt
from toolkit.rehearsal.tokenizer import build_tiny_tokenizer

pytestmark = pytest.mark.integration

TPOT_MS = 25.0
TIMING = ["--load-seconds", "1", "--tpot-ms", str(TPOT_MS)]


@dataclass(frozen=True)
class Rehearsal:
    router: str
    port: int
    miswired_router: str  # its --prefill bootstrap port is the prefill's HTTP port
    tokenizer: Path
    dataset: Path
    workdir: Path
    env: dict[str, str]


def start_router(
    procs: Processes, name: str, prefill: str, boot: int, decode: str, env: dict[str, str]
) -> tuple[str, int]:
    port = free_port()
    argv = [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation"]
    argv += ["--prefill", prefill, str(boot), "--decode", decode, "--policy", "round_robin"]
    argv += ["--host", LOOPBACK, "--port", str(port)]
    argv += ["--prometheus-host", LOOPBACK, "--prometheus-port", str(free_port())]
    procs.start(name, argv, env)
    return f"http://{LOOPBACK}:{port}", port


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """Prefill + decode engines and the real router in PD mode, ready to serve."""
    workdir = tmp_path_factory.mktemp("rehearsal")
    home = workdir / "home"
    home.mkdir()
    env = loopback_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), HF_HUB_OFFLINE="1")
    tokenizer = build_tiny_tokenizer(workdir / "tokenizer")
    dataset = write_sharegpt(workdir / "sharegpt.json")
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        prefill, boot, decode = free_port(), free_port(), free_port()
        model = ["--model-path", str(tokenizer), "--served-model-name", "rehearsal-model"]
        model += ["--host", LOOPBACK]
        pd = ["--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(boot)]
        procs.engine("prefill", [*model, "--port", str(prefill), *pd], TIMING)
        pd = ["--disaggregation-mode", "decode"]
        procs.engine("decode", [*model, "--port", str(decode), *pd], TIMING)
        prefill_url, decode_url = f"http://{LOOPBACK}:{prefill}", f"http://{LOOPBACK}:{decode}"
        base, port = start_router(procs, "router", prefill_url, boot, decode_url, env)
        wrong, _ = start_router(procs, "router-miswired", prefill_url, prefill, decode_url, env)
        wait_status(base + "/readiness", timeout=90)
        wait_status(wrong + "/readiness", timeout=90)
        print(f"routers ready after {time.monotonic() - started:.1f} s")
        yield Rehearsal(base, port, wrong, tokenizer, dataset, workdir, env)
    finally:
        procs.stop_all()


def run_bench(r: Rehearsal, name: str, backend: str, prompts: int, out_len: int) -> dict:
    """Runs bench_serving against the router; returns the JSONL result line."""
    out = r.workdir / f"{name}.jsonl"
    argv = [sys.executable, "-m", "sglang.bench_serving", "--backend", backend]
    argv += ["--host", LOOPBACK, "--port", str(r.port), "--model", "rehearsal-model"]
    argv += ["--dataset-name", "random", "--dataset-path", str(r.dataset)]
    argv += ["--tokenizer", str(r.tokenizer), "--random-input-len", "256"]
    argv += ["--random-output-len", str(out_len), "--random-range-ratio", "1"]
    argv += ["--num-prompts", str(prompts), "--max-concurrency", "4", "--disable-tqdm"]
    argv += ["--output-file", str(out)]
    started = time.monotonic()
    procs = Processes(r.workdir)
    try:
        bench = procs.start(name, argv, r.env)
        status = bench.wait_exit(180)
    finally:
        procs.stop_all()
    print(f"{name}: bench_serving took {time.monotonic() - started:.1f} s")
    assert status == 0, bench.log()[-3000:]
    lines = out.read_text().splitlines()
    assert lines, bench.log()[-3000:]
    result = json.loads(lines[-1])  # Python's json: the line holds a bare Infinity
    keys = ("completed", "total_output_tokens", "median_ttft_ms", "median_tpot_ms")
    print(name, {key: result[key] for key in keys})
    return result


def test_router_registers_the_rehearsal_workers(rehearsal: Rehearsal) -> None:
    models = get_json(rehearsal.router + "/v1/models")
    assert [m["id"] for m in models["data"]] == ["rehearsal-model"]
    body = {"text": "the of and", "sampling_params": {"max_new_tokens": 5}}
    status, out = post_json(rehearsal.router + "/generate", body)
    assert status == 200 and out["meta_info"]["completion_tokens"] == 5


def test_miswired_bootstrap_port_fails_requests_with_a_clear_error(rehearsal: Rehearsal) -> None:
    body = {"text": "the of and", "sampling_params": {"max_new_tokens": 5}}
    status, out = post_json(rehearsal.miswired_router + "/generate", body)
    assert status == 500
    assert "answered but is not a prefill bootstrap server" in out["error"]["message"]


def test_bench_serving_sglang_backend_measures_the_configured_tpot(rehearsal: Rehearsal) -> None:
    result = run_bench(rehearsal, "bench-sglang", "sglang", prompts=16, out_len=32)
    assert result["completed"] == 16
    assert result["total_output_tokens"] == 16 * 32
    assert result["total_output_tokens_retokenized"] == 16 * 32  # one token per word
    assert abs(result["total_input_tokens"] - 16 * 256) <= 16 * 256 * 0.05  # estimated
    assert abs(result["median_tpot_ms"] - TPOT_MS) <= 0.2 * TPOT_MS, result["median_tpot_ms"]
    assert result["request_rate"] == float("inf")


def test_bench_serving_openai_chat_backend_through_the_router(rehearsal: Rehearsal) -> None:
    result = run_bench(rehearsal, "bench-chat", "sglang-oai-chat", prompts=8, out_len=16)
    assert result["completed"] == 8
    assert result["total_output_tokens_retokenized"] == 8 * 16
    assert abs(result["median_tpot_ms"] - TPOT_MS) <= 0.2 * TPOT_MS, result["median_tpot_ms"]
