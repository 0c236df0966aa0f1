"""SLO parsing, the validity gate (each INVALID reason), PASS/FAIL and margins."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from toolkit.bench.results import BenchError, BenchResult, load_results
from toolkit.bench.verdict import SLO, Status, evaluate, parse_slos, validity_reasons

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bench"
TPOT_50 = SLO("median_tpot_ms", "<=", 50.0)


def _single() -> BenchResult:
    [result] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    return result


def _invalid(tag: str, requested: int | None = None) -> BenchResult:
    runs = {r.tag: r for r in load_results(FIXTURES / "invalid_runs.jsonl", requested)}
    return runs[tag]


@pytest.mark.parametrize(
    ("text", "metric", "op", "bound"),
    [
        ("median_tpot_ms<=50", "median_tpot_ms", "<=", 50.0),
        ("  p99_ttft_ms <= 2000.5 ", "p99_ttft_ms", "<=", 2000.5),
        ("output_throughput>=1000", "output_throughput", ">=", 1000.0),
        ("median_tpot_ms≤50", "median_tpot_ms", "<=", 50.0),
        ("p99_itl_ms<1e2", "p99_itl_ms", "<", 100.0),
    ],
)
def test_slo_parse(text: str, metric: str, op: str, bound: float) -> None:
    assert SLO.parse(text) == SLO(metric, op, bound)


def test_slo_str_and_describe() -> None:
    assert str(SLO.parse("median_tpot_ms <= 50")) == "median_tpot_ms<=50"
    assert str(SLO.parse("p99_ttft_ms<=2000.5")) == "p99_ttft_ms<=2000.5"
    assert SLO.parse("median_tpot_ms<=50").describe() == "median TPOT ≤ 50 ms"
    assert SLO.parse("output_throughput>=1000").describe() == "output throughput ≥ 1,000 tok/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("median_tpot_ms=50", "write METRIC<=NUMBER"),
        ("", "cannot parse SLO"),
        ("median_tpt_ms<=50", "did you mean 'median_tpot_ms'"),
        ("median_tpot_ms<=fast", "the bound must be a number, got 'fast'"),
        ("median_tpot_ms<=inf", "must be a finite number"),
        ("median_tpot_ms<=50ms", "the bound must be a number, got '50ms'"),
    ],
)
def test_slo_parse_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        SLO.parse(text)


def test_slo_from_dict_and_profile_objects() -> None:
    assert SLO.from_dict({"metric": "median_tpot_ms", "max": 50}) == TPOT_50
    assert SLO.from_dict({"metric": "output_throughput", "min": 900}).op == ">="
    profile_slo = SimpleNamespace(metric="p99_ttft_ms", max=3000.0)
    slos = parse_slos(["median_tpot_ms<=50", {"metric": "median_itl_ms", "max": 40}, profile_slo])
    assert [str(s) for s in slos] == [
        "median_tpot_ms<=50",
        "median_itl_ms<=40",
        "p99_ttft_ms<=3000",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metric": "median_tpot_ms", "max": 50, "min": 1}, "exactly one of max or min"),
        ({"metric": "median_tpot_ms"}, "exactly one of max or min"),
        ({"max": 50}, "give a metric"),
        ({"metric": "median_tpot_ms", "max": 50, "unit": "ms"}, r"unknown keys \['unit'\]"),
        ({"metric": "median_tpot_ms", "max": True}, "must be a number"),
        ({"metric": "tpot", "max": 50}, "unknown SLO metric 'tpot'"),
    ],
)
def test_slo_from_dict_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        SLO.from_dict(data)


def test_pass_with_margin() -> None:
    verdict = evaluate(_single(), [TPOT_50], expected_output_len=1024)
    assert verdict.status is Status.PASS
    [check] = verdict.checks
    assert check.describe() == "median TPOT 41.2 ms ≤ 50 ms: PASS, 8.8 ms (17.6%) headroom"
    assert verdict.margin == pytest.approx(8.8)
    assert verdict.margin_pct == pytest.approx(17.6)
    assert verdict.summary == "PASS: median TPOT 41.2 ms ≤ 50 ms: PASS, 8.8 ms (17.6%) headroom"
    assert verdict.notes == ()


def test_fail_with_overshoot() -> None:
    verdict = evaluate(_single(), parse_slos(["median_tpot_ms<=40"]))
    assert verdict.status is Status.FAIL
    assert verdict.reasons == ("median TPOT 41.2 ms > 40 ms: FAIL, 1.2 ms (3%) over",)
    assert verdict.margin == pytest.approx(-1.2)


def test_throughput_floor_fails_short() -> None:
    verdict = evaluate(_single(), parse_slos(["output_throughput>=1200"]))
    assert verdict.status is Status.FAIL
    # 65536 / 60.5 = 1083.2 tok/s, 116.8 short of 1200 (9.7%).
    assert verdict.reasons == (
        "output throughput 1,083 tok/s < 1,200 tok/s: FAIL, 116.8 tok/s (9.7%) short",
    )


def test_several_slos_report_failures_and_the_tightest_margin() -> None:
    slos = parse_slos(["median_tpot_ms<=50", "p99_ttft_ms<=600", "p99_itl_ms<=100"])
    verdict = evaluate(_single(), slos)
    assert verdict.status is Status.FAIL
    assert verdict.reasons == ("p99 TTFT 700 ms > 600 ms: FAIL, 100 ms (16.7%) over",)
    assert len(verdict.checks) == 3
    assert verdict.tightest is not None and verdict.tightest.slo.metric == "p99_ttft_ms"
    assert [c.passed for c in verdict.checks] == [True, False, True]


def test_no_slo_passes_a_valid_run_with_a_note() -> None:
    verdict = evaluate(_single())
    assert verdict.status is Status.PASS
    assert verdict.margin is None
    assert verdict.notes == ("no SLO given: the run is valid, nothing was compared",)


INVALID_CASES = [
    ("lost-requests", 64, None, ["only 60 of 64 requests completed (4 failed)"]),
    (
        "short-outputs",
        8,
        16,
        [
            "2 of 8 requests returned fewer than 16 output tokens (shortest: 3); "
            "with ignore-eos each should return 16"
        ],
    ),
    ("zero-output", 64, 1024, ["no output tokens were generated (total_output_tokens is 0)"]),
    (
        "errors",
        8,
        16,
        [
            "only 6 of 8 requests completed (2 failed)",
            "2 request(s) reported errors; first: "
            "'ClientConnectorError: Cannot connect to host 10.0.0.2:30000'",
        ],
    ),
    (
        "total-short",
        16,
        1024,
        [
            "total_output_tokens 15,000 < 16 completed × 1,024 = 16,384 expected with "
            "ignore-eos (91.6%)"
        ],
    ),
]
assert INVALID_CASES


@pytest.mark.parametrize(("tag", "requested", "expected_len", "reasons"), INVALID_CASES)
def test_each_invalid_reason(
    tag: str, requested: int, expected_len: int | None, reasons: list[str]
) -> None:
    result = _invalid(tag, requested)
    assert validity_reasons(result, expected_len) == reasons
    verdict = evaluate(result, [SLO("median_tpot_ms", "<=", 1e6)], expected_len)
    assert verdict.status is Status.INVALID
    assert verdict.checks == ()
    assert verdict.reasons[: len(reasons)] == tuple(reasons)


def test_invalid_is_never_pass_even_when_the_slo_is_met() -> None:
    result = _invalid("lost-requests", 64)
    assert result.median_tpot_ms == 45.0
    verdict = evaluate(result, [TPOT_50])
    assert verdict.status is Status.INVALID
    assert verdict.summary == "INVALID: only 60 of 64 requests completed (4 failed)"


def test_zero_output_also_says_the_slo_metric_is_missing() -> None:
    verdict = evaluate(_invalid("zero-output", 64), [TPOT_50])
    assert verdict.reasons == (
        "no output tokens were generated (total_output_tokens is 0)",
        "median_tpot_ms is missing from the result, so median_tpot_ms<=50 cannot be judged",
    )


def test_short_outputs_are_only_checked_when_the_length_is_known() -> None:
    result = _invalid("short-outputs", 8)
    assert evaluate(result, [TPOT_50]).status is Status.PASS
    assert evaluate(result, [TPOT_50], expected_output_len=16).status is Status.INVALID


def test_failed_requests_are_not_double_counted_as_short() -> None:
    result = _invalid("errors", 8)
    assert result.output_lens == (16, 16, 0, 16, 16, 0, 16, 16)
    assert not any("fewer than" in r for r in validity_reasons(result, 16))


def test_unknown_requested_is_noted_not_invalid() -> None:
    [result] = load_results(FIXTURES / "sglang_single.jsonl")
    verdict = evaluate(result, [TPOT_50])
    assert verdict.status is Status.PASS
    assert verdict.notes == ("requested count unknown: completed vs requested was not checked",)


def test_no_completed_request_without_requested_is_invalid() -> None:
    result = dataclasses.replace(_invalid("zero-output"), completed=0)
    assert validity_reasons(result)[0] == "no request completed"


def test_verdict_to_dict() -> None:
    data = evaluate(_single(), [TPOT_50]).to_dict()
    assert data["status"] == "PASS"
    assert data["checks"] == [
        {"slo": "median_tpot_ms<=50", "value": 41.2, "passed": True, "margin": pytest.approx(8.8)}
    ]
