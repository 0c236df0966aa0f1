"""Parsing bench_serving / vLLM result files, and comparing two runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest

from toolkit.bench.report import compare
from toolkit.bench.results import (
    METRIC_NAMES,
    BenchError,
    BenchResult,
    format_metric,
    format_number,
    load_results,
    metric_label,
    parse_results,
)
from toolkit.bench.verdict import Status, parse_slos

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bench"


def _reject_constant(name: str) -> float:
    raise ValueError(f"strict JSON has no {name}")


def test_fixture_has_bare_infinity_that_strict_json_rejects() -> None:
    text = (FIXTURES / "sglang_single.jsonl").read_text()
    assert '"request_rate": Infinity' in text
    with pytest.raises(ValueError, match="Infinity"):
        json.loads(text.splitlines()[0], parse_constant=_reject_constant)


def test_single_run_fields() -> None:
    [result] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    assert result.source == "sglang"
    assert result.tag == "a3-1p1d"
    assert result.backend == "sglang"
    assert result.dataset_name == "random"
    assert result.request_rate == math.inf
    assert result.max_concurrency == 16
    assert (result.random_input_len, result.random_output_len) == (1024, 1024)
    assert result.completed == 64
    assert result.requested == 64
    assert result.failed == 0
    assert result.duration == 60.5
    assert result.total_output_tokens == 65536
    assert result.output_throughput == pytest.approx(65536 / 60.5)
    assert result.request_throughput == pytest.approx(64 / 60.5)
    assert result.median_tpot_ms == 41.2
    assert result.mean_ttft_ms == pytest.approx(367.5)
    assert result.p99_itl_ms == 44.0
    assert result.median_e2e_latency_ms == pytest.approx(350.0 + 41.2 * 1023)
    assert result.accept_length == 2.31
    assert result.output_lens is None and result.errors is None
    assert result.raw["server_info"]["version"] == "0.5.23"
    assert result.fixed_output_len == 1024


def test_metric_reads_keys_not_kept_as_fields() -> None:
    [result] = load_results(FIXTURES / "sglang_single.jsonl")
    assert result.metric("median_tpot_ms") == 41.2
    assert result.metric("completed") == 64.0
    # p90 is median + 0.5 * (p99 - median) in the fixture generator.
    assert result.metric("p90_ttft_ms") == pytest.approx(525.0)
    with pytest.raises(BenchError, match="unknown metric 'tpot'"):
        result.metric("tpot")


def test_fixed_output_len_needs_a_fixed_random_dataset() -> None:
    [result] = load_results(FIXTURES / "sglang_single.jsonl")
    assert dataclasses.replace(result, random_range_ratio=0.5).fixed_output_len is None
    assert dataclasses.replace(result, dataset_name="sharegpt").fixed_output_len is None


def test_truncated_last_line_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    path = FIXTURES / "appended_partial.jsonl"
    assert not path.read_text().endswith("\n")
    with caplog.at_level(logging.WARNING, logger="toolkit.bench.results"):
        results = load_results(path)
    assert [r.max_concurrency for r in results] == [1, 8]
    assert [r.total_output_tokens for r in results] == [1024, 4096]
    assert "appended_partial.jsonl:3: skipped a partly written last line" in caplog.text


def test_corrupt_line_in_the_middle_is_an_error_naming_the_line() -> None:
    lines = (FIXTURES / "appended_partial.jsonl").read_text().splitlines()
    text = "\n".join([lines[0], '{"completed": 3, "dur', lines[1]]) + "\n"
    with pytest.raises(BenchError, match=r"^out\.jsonl:2: not valid JSON"):
        parse_results(text, origin="out.jsonl")


def test_bad_last_line_that_is_complete_is_an_error() -> None:
    with pytest.raises(BenchError, match=r"<text>:1: not valid JSON"):
        parse_results('{"completed": 3,\n')


def test_non_object_and_non_result_lines_are_errors() -> None:
    with pytest.raises(BenchError, match=r"f:1: expected a JSON object, got list"):
        parse_results("[1, 2]\n", origin="f")
    with pytest.raises(BenchError, match=r"f:1: not a benchmark result: the key 'completed'"):
        parse_results('{"duration": 3}\n', origin="f")


def test_missing_file_is_a_bench_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read the benchmark results"):
        load_results(tmp_path / "nope.jsonl")


def test_pretty_printed_single_result_is_accepted() -> None:
    raw = json.loads((FIXTURES / "sglang_single.jsonl").read_text().splitlines()[0])
    [result] = parse_results(json.dumps(raw, indent=2))
    assert result.median_tpot_ms == 41.2


def test_nan_metrics_become_none_and_details_are_read() -> None:
    results = {r.tag: r for r in load_results(FIXTURES / "invalid_runs.jsonl")}
    assert len(results) == 5
    zero = results["zero-output"]
    assert "NaN" in (FIXTURES / "invalid_runs.jsonl").read_text()
    assert zero.total_output_tokens == 0
    assert zero.median_tpot_ms is None and zero.mean_ttft_ms is None
    short = results["short-outputs"]
    assert short.output_lens == (16, 16, 16, 3, 16, 16, 16, 9)
    assert short.errors == ("",) * 8
    errors = results["errors"]
    assert errors.errors is not None
    assert errors.errors[2].startswith("ClientConnectorError")


def test_to_json_is_strict_and_round_trips() -> None:
    [result] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    text = result.to_json()
    data = json.loads(text, parse_constant=_reject_constant)
    assert data["request_rate"] == "inf"
    assert data["requested"] == 64
    assert "raw" not in data
    assert BenchResult.from_dict(data) == result
    with_raw = json.loads(result.to_json(include_raw=True), parse_constant=_reject_constant)
    assert with_raw["raw"]["request_rate"] == "inf"
    assert with_raw["raw"]["server_info"]["internal_states"][0]["avg_spec_accept_length"] == 2.31


def test_to_json_turns_nan_into_null() -> None:
    zero = next(r for r in load_results(FIXTURES / "invalid_runs.jsonl") if r.tag == "zero-output")
    data = json.loads(zero.to_json(include_raw=True), parse_constant=_reject_constant)
    assert data["median_tpot_ms"] is None
    assert data["raw"]["median_tpot_ms"] is None


def test_vllm_result_is_read_with_its_own_names() -> None:
    [result] = load_results(FIXTURES / "vllm_result.json")
    assert result.source == "vllm"
    assert result.requested == 100
    assert result.completed == 98
    assert result.failed == 2
    assert result.request_rate == math.inf
    assert result.median_e2e_latency_ms == 16500.0
    assert result.metric("std_e2e_latency_ms") == 900.0
    assert result.total_throughput == pytest.approx(98 * 2560 / 50)
    assert result.input_throughput == pytest.approx(98 * 2048 / 50)
    assert result.accept_length == 2.8
    assert result.median_tpot_ms == 30.5


def test_metric_names_cover_the_jsonl_key_list() -> None:
    # bench_serving's 37 keys, then toolkit's two derived ones (per card, per user).
    assert len(METRIC_NAMES) == 39
    assert METRIC_NAMES[-2:] == ("output_throughput_per_card", "tokens_per_user")
    assert "p95_itl_ms" in METRIC_NAMES and "max_itl_ms" not in METRIC_NAMES


@pytest.mark.parametrize(
    ("value", "expected"),
    [(41.2, "41.2"), (50.0, "50"), (175241.3, "175,241"), (None, "-"), (math.inf, "inf")],
)
def test_format_number(value: float | None, expected: str) -> None:
    assert format_number(value) == expected


def test_labels_and_units() -> None:
    assert metric_label("median_tpot_ms") == "median TPOT"
    assert metric_label("p99_e2e_latency_ms") == "p99 E2E"
    assert format_metric(2132.4, "output_throughput") == "2,132 tok/s"
    assert format_metric(1.5, "request_throughput") == "1.5 req/s"
    assert format_number(22.2, 2, strip=False) == "22.20"


def test_compare_gives_deltas_in_both_directions_and_both_verdicts() -> None:
    [a] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    b = dataclasses.replace(a, median_tpot_ms=36.05, output_throughput=1300.0, accept_length=None)
    result = compare(a, b, parse_slos(["median_tpot_ms<=40"]), labels=("before", "after"))
    rows = {row.metric: row for row in result.rows}
    tpot = rows["median_tpot_ms"]
    assert tpot.delta == pytest.approx(-5.15)
    assert tpot.delta_pct == pytest.approx(-12.5)
    assert tpot.improved is True
    tput = rows["output_throughput"]
    assert tput.delta == pytest.approx(1300.0 - 65536 / 60.5)
    assert tput.improved is True
    assert rows["accept_length"].b is None and rows["accept_length"].delta is None
    assert rows["completed"].delta == 0 and rows["completed"].improved is None
    assert [v.status for v in result.verdicts] == [Status.FAIL, Status.PASS]
    assert result.labels == ("before", "after")


def test_compare_worse_latency_is_not_an_improvement() -> None:
    [a] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    b = dataclasses.replace(a, p99_ttft_ms=1400.0)
    row = next(r for r in compare(a, b).rows if r.metric == "p99_ttft_ms")
    assert (row.delta, row.delta_pct, row.improved) == (700.0, 100.0, False)
