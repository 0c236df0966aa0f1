"""Which bench client runs, its command line, and where its prompts come from (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.bench.clients import (
    ClientFacts,
    choose_client,
    missing_client_fix,
    sglang_argv,
    split_flags,
    vllm_argv,
)
from toolkit.bench.datasets import MAX_CORPUS_WORDS, choose_dataset, corpus_for
from toolkit.bench.results import BenchResult, parse_results
from toolkit.bench.verdict import Status, evaluate, parse_slos
from toolkit.executor.cluster import host_work
from toolkit.preflight.check_facts import HostFacts
from toolkit.preflight.check_rules import bench_client

# The seeds' shape (seed 003: random, fixed lengths) as the planner writes it, after `-m M`.
SEED_FLAGS = [
    "--backend",
    "sglang",
    "--host",
    "10.0.0.1",
    "--port",
    "30000",
    "--dataset-name",
    "random",
    "--random-input-len",
    "1024",
    "--random-output-len",
    "512",
    "--random-range-ratio",
    "1",
    "--max-concurrency",
    "4",
    "--num-prompts",
    "32",
    "--tokenizer",
    "/models/m",
]


@pytest.mark.parametrize(
    ("engine", "requested", "installed", "name", "reason"),
    [
        ("sglang", None, {"sglang": True, "vllm": True}, "sglang", "the engine's own client"),
        ("vllm", None, {"sglang": True, "vllm": True}, "vllm", "the engine's own client"),
        ("vllm", None, {"sglang": True, "vllm": False}, "sglang", "vllm is not installed"),
        ("sglang", None, {"sglang": False, "vllm": True}, "vllm", "sglang is not installed"),
        ("vllm", None, {"sglang": False, "vllm": False}, "vllm", "the engine's own client"),
        ("sglang", "vllm", {"sglang": True, "vllm": True}, "vllm", "asked for"),
    ],
)
def test_choose_client(
    engine: str, requested: str | None, installed: dict, name: str, reason: str
) -> None:
    choice = choose_client(engine, requested, installed)
    assert choice.name == name
    assert reason in choice.reason
    assert choice.installed == installed[name]


def test_a_missing_client_names_the_fix() -> None:
    choice = choose_client("vllm", "vllm", {"sglang": True, "vllm": False})
    fix = missing_client_fix(choice, "/opt/venv/bin/python", "h1")
    assert "no vllm bench serve on h1" in fix and "pip install vllm" in fix
    assert "--client sglang" in fix


def test_client_facts_from_the_helper() -> None:
    facts = ClientFacts.from_helper(
        {
            "sglang": {
                "installed": True,
                "version": "0.5.23",
                "module": "sglang.benchmark.serving",
            },
            "vllm": {"installed": False},
        }
    )
    assert facts.installed("sglang") and not facts.installed("vllm")
    assert facts.sglang_module == "sglang.benchmark.serving"


def test_sglang_command_adds_its_result_file() -> None:
    argv = sglang_argv("sglang.benchmark.serving", "/py", SEED_FLAGS, "/run/b.jsonl")
    assert argv[:3] == ["/py", "-m", "sglang.benchmark.serving"]
    assert argv[-3:] == ["--output-file", "/run/b.jsonl", "--output-details"]


def test_vllm_command_translates_the_seed_shape() -> None:
    argv = vllm_argv("/py", SEED_FLAGS, "/run", "b.json")
    assert argv == [
        "/py",
        "-m",
        "vllm.entrypoints.cli.main",
        "bench",
        "serve",
        "--backend",
        "openai",
        "--host",
        "10.0.0.1",
        "--port",
        "30000",
        "--dataset-name",
        "random",
        "--random-input-len",
        "1024",
        "--random-output-len",
        "512",
        "--random-range-ratio",
        "0",
        "--max-concurrency",
        "4",
        "--num-prompts",
        "32",
        "--tokenizer",
        "/models/m",
        "--ignore-eos",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "90,95,99",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        "/run",
        "--result-filename",
        "b.json",
    ]


def _flag(argv: list[str], name: str) -> str:
    return dict((k, v[0] if v else "") for k, v in split_flags(argv[5:]))[name]


def test_vllm_range_matches_bench_servings_range() -> None:
    """bench_serving with ratio 0.5 draws from [500, 1000]; vLLM draws [C(1-q), C(1+q)]."""
    flags = ["--random-input-len", "1000", "--random-output-len", "200"]
    argv = vllm_argv("/py", [*flags, "--random-range-ratio", "0.5"], "/r", "f.json")
    centre, ratio = int(_flag(argv, "random-input-len")), float(_flag(argv, "random-range-ratio"))
    assert (round(centre * (1 - ratio)), round(centre * (1 + ratio))) == (500, 1000)
    out = int(_flag(argv, "random-output-len"))
    assert (round(out * (1 - ratio)), round(out * (1 + ratio))) == (100, 200)


def test_vllm_command_drops_and_renames_sglang_only_flags() -> None:
    flags = [
        "--backend",
        "sglang-oai-chat",
        "--dataset-name",
        "random-ids",
        "--pd-separated",
        "--disable-ignore-eos",
        "--warmup-requests",
        "2",
        "--output-file",
        "x.jsonl",
        "--seed",
        "7",
    ]
    argv = vllm_argv("/py", flags, "/r", "f.json")
    assert "--pd-separated" not in argv and "--output-file" not in argv
    assert "--ignore-eos" not in argv and "--disable-ignore-eos" not in argv
    assert _flag(argv, "backend") == "openai-chat"
    assert _flag(argv, "endpoint") == "/v1/chat/completions"
    assert _flag(argv, "dataset-name") == "random"
    assert _flag(argv, "num-warmups") == "2" and _flag(argv, "seed") == "7"


@pytest.mark.parametrize(
    ("client", "extra", "hub", "source"),
    [
        ("sglang", [], False, "corpus"),
        ("sglang", [], True, "hub"),
        ("sglang", ["--dataset-name", "random-ids"], False, "none"),
        ("sglang", ["--dataset-path", "/data/sg.json"], False, "path"),
        ("vllm", [], False, "none"),  # vLLM's random is token ids
        ("vllm", ["--dataset-name", "sharegpt"], True, "corpus"),  # vLLM never downloads it
    ],
)
def test_choose_dataset(client: str, extra: list[str], hub: bool, source: str) -> None:
    choice = choose_dataset(client, [*SEED_FLAGS, *extra], hub, "huggingface.co: no route")
    assert choice.source == source
    assert (choice.corpus is not None) == (source == "corpus")
    if source == "corpus" and client == "sglang":
        assert "hub cannot be reached (huggingface.co: no route)" in choice.note


def test_corpus_fits_the_longest_prompt_and_every_prompt() -> None:
    corpus = corpus_for("sglang", SEED_FLAGS)
    assert (corpus.conversations, corpus.words, corpus.repeats) == (32, 1032, False)
    # The 64K-context seeds with 1536 prompts would need 100M words: capped, and said so.
    big = ["--random-input-len", "65536", "--num-prompts", "1536", "--dataset-name", "random"]
    capped = corpus_for("sglang", big)
    assert capped.conversations == 1536 and capped.repeats
    assert capped.conversations * capped.words <= MAX_CORPUS_WORDS
    assert "repeat their text" in choose_dataset("sglang", big, False).note


def _bench_host_facts(sglang: str | None, vllm: str | None) -> HostFacts:
    def package(version: str | None) -> dict:
        return {"version": version, "path": "/venv/x" if version else None}

    probe = {
        "python": {"executable": "/venv/bin/python", "version": "3.11"},
        "packages": {"sglang": package(sglang), "vllm": package(vllm)},
    }
    return HostFacts("h1", probe=probe, python="/venv/bin/python")


@pytest.mark.parametrize(
    ("sglang", "vllm", "status", "summary"),
    [
        (None, "0.32.0", "ok", "vllm 0.32.0"),
        ("0.5.23", None, "ok", "sglang 0.5.23"),
        (None, None, "failed", "no vllm"),
    ],
)
def test_check_names_the_client_for_a_vllm_plan(
    sglang: str | None, vllm: str | None, status: str, summary: str
) -> None:
    from tests.unit.test_planner import plan_for

    plan = plan_for("b200-glm5-fp8-vllm")
    work = host_work(plan)[plan.bench.host]
    finding = bench_client(plan, work, _bench_host_facts(sglang, vllm))
    assert (finding.status, finding.summary) == (status, summary)
    if sglang and not vllm:
        assert "vllm is not installed on the bench host" in finding.detail


def test_plan_cards_match_every_recipe() -> None:
    from tests.unit.test_planner import SHIPPED, plan_for
    from toolkit.executor.bench import plan_cards

    checked = 0
    for name in SHIPPED:
        plan = plan_for(name)
        if plan.meta["cards"]:  # the CPU smoke profiles state 0
            assert plan_cards(plan) == plan.meta["cards"], name
            checked += 1
    assert checked >= 20


# Result files written by the real clients against the real CPU engines (tests/integration/
# test_real_bench.py's runs: 4 prompts of 64 in / 16 out, the tiny model; its path shortened).
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "bench"


def test_parses_a_real_vllm_bench_serve_result() -> None:
    [result] = parse_results((REAL / "vllm_bench_serve_cpu.json").read_text(), requested=4)
    raw = json.loads((REAL / "vllm_bench_serve_cpu.json").read_text())
    assert result.source == "vllm" and result.backend == "openai"
    assert (result.completed, result.requested, result.failed) == (4, 4, 0)
    assert result.median_tpot_ms == raw["median_tpot_ms"] > 0
    assert result.median_e2e_latency_ms == raw["median_e2el_ms"] > 0
    assert result.total_throughput == raw["total_token_throughput"]
    assert result.metric("p95_ttft_ms") == raw["p95_ttft_ms"]
    assert result.output_lens == (16, 16, 16, 16)
    verdict = evaluate(result, parse_slos(["median_tpot_ms<=50"]), expected_output_len=16)
    assert verdict.status is Status.PASS, verdict.summary
    # Asked for 17 tokens each, 16 came back: the gate says INVALID.
    assert evaluate(result, (), expected_output_len=17).status is Status.INVALID


def test_parses_a_real_sglang_benchmark_serving_result() -> None:
    text = (REAL / "sglang_benchmark_serving_cpu.jsonl").read_text()
    [result] = parse_results(text, requested=4)
    raw = json.loads(text)
    assert result.source == "sglang" and result.dataset_name == "random"
    assert (result.completed, result.failed, result.fixed_output_len) == (4, 0, 16)
    assert result.median_tpot_ms == raw["median_tpot_ms"] > 0
    assert result.metric("p95_e2e_latency_ms") == raw["p95_e2e_latency_ms"]
    verdict = evaluate(result, parse_slos(["median_tpot_ms<=50"]), result.fixed_output_len)
    assert verdict.status is Status.PASS, verdict.summary
    with_cards = BenchResult.from_dict({**raw, "cards": 2}, 4)
    assert with_cards.output_throughput_per_card == raw["output_throughput"] / 2
    assert with_cards.tokens_per_user == 1000 / raw["median_tpot_ms"]


def test_up_may_skip_a_missing_client() -> None:
    from tests.unit.test_planner import plan_for

    plan = plan_for("b200-glm5-fp8-vllm")
    work = host_work(plan)[plan.bench.host]
    finding = bench_client(plan, work, _bench_host_facts(None, None), "`up` does not need it")
    assert (finding.status, finding.summary) == ("skipped", "no vllm")
