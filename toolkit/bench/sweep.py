"""Concurrency (or request-rate) sweeps: the table users build by hand, and its answer.

Today a recipe's benchmark section is a hand-made table (seed 002): one bench_serving run per
`--max-concurrency` value, then output tok/s, TTFT, TPOT and ITL p99 per row, and a
"saturation point" picked by eye. Here a sweep is data: a `SweepSpec` parsed from
"max_concurrency=1,8,16", one `BenchResult` and `Verdict` per point, and the saturation point
defined precisely as the point with the highest output throughput among those that PASS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from toolkit.bench.results import (
    BenchError,
    BenchResult,
    format_metric,
    format_number,
    metric_label,
)
from toolkit.bench.verdict import SLO, Status, Verdict, evaluate

# Swept variable -> bench_serving flag; aliases people type.
SWEEP_VARIABLES = {"max_concurrency": "--max-concurrency", "request_rate": "--request-rate"}
_ALIASES = {"concurrency": "max_concurrency", "c": "max_concurrency", "rate": "request_rate"}
_SHORT = {"max_concurrency": "c", "request_rate": "rate"}


def _parse_value(variable: str, text: str) -> float:
    text = text.strip()
    if variable == "request_rate" and text.lower() in ("inf", "infinity"):
        return math.inf
    try:
        value = float(text) if variable == "request_rate" else int(text)
    except ValueError:
        kind = "a number or inf" if variable == "request_rate" else "a whole number"
        raise BenchError(f"sweep {variable}: {text!r} is not {kind}") from None
    if not value > 0:  # also rejects nan
        raise BenchError(f"sweep {variable}: values must be positive, got {text!r}")
    return value


def format_value(value: float) -> str:
    """A swept value without thousands separators: 1024, 0.5, inf."""
    return format_number(value, 3).replace(",", "")


@dataclass(frozen=True)
class SweepSpec:
    """Which bench_serving parameter to vary and over which values, in run order."""

    variable: str
    values: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> SweepSpec:
        """Parse "max_concurrency=1,8,16" or "request_rate=1,2,4,inf" ("concurrency", "c" and
        "rate" are accepted as names)."""
        name, sep, rest = text.partition("=")
        name = name.strip().replace("-", "_").lstrip("_")
        variable = _ALIASES.get(name, name)
        if not sep or variable not in SWEEP_VARIABLES:
            raise BenchError(
                f"cannot parse sweep {text!r}: write NAME=V1,V2,… with NAME one of "
                f"{', '.join(SWEEP_VARIABLES)}, e.g. 'max_concurrency=1,8,16'"
            )
        parts = [p for p in rest.split(",") if p.strip()]
        if not parts:
            raise BenchError(f"sweep {variable}: no values given after '='")
        values = tuple(_parse_value(variable, part) for part in parts)
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            shown = ", ".join(format_number(v) for v in duplicates)
            raise BenchError(f"sweep {variable}: {shown} given more than once")
        return cls(variable, values)

    @property
    def flag(self) -> str:
        """The bench_serving flag for this variable, e.g. "--max-concurrency"."""
        return SWEEP_VARIABLES[self.variable]

    def label(self, value: float) -> str:
        """ "c=128" or "rate=4" """
        return f"{_SHORT[self.variable]}={format_value(value)}"

    def __str__(self) -> str:
        shown = ",".join(format_value(v) for v in self.values)
        return f"{self.variable}={shown}"


@dataclass(frozen=True)
class SweepPoint:
    """One sweep value, its run (None when no run was recorded) and its verdict."""

    value: float
    result: BenchResult | None
    verdict: Verdict


@dataclass(frozen=True)
class SweepRow:
    """One row of the seed-002 style table."""

    value: float
    completed: str
    output_throughput: float | None
    per_card: float | None
    per_user: float | None
    median_ttft_ms: float | None
    median_tpot_ms: float | None
    p99_itl_ms: float | None
    status: Status
    reason: str


@dataclass(frozen=True)
class Sweep:
    """A whole sweep: spec, SLOs and one point per value, in spec order."""

    spec: SweepSpec
    slos: tuple[SLO, ...]
    points: tuple[SweepPoint, ...]

    @property
    def saturation(self) -> SweepPoint | None:
        return saturation_point(self.points)

    def rows(self) -> list[SweepRow]:
        return [_row(point) for point in self.points]

    def saturation_text(self) -> str:
        """The answer in one sentence, including why there is none."""
        best = self.saturation
        slos = " and ".join(s.describe() for s in self.slos)
        if best is None or best.result is None:
            why = f"no point passes the SLO ({slos})" if slos else "no point produced a valid run"
            return f"No saturation point: {why}."
        rate = format_metric(best.result.output_throughput, "output_throughput")
        among = f"runs that meet {slos}" if slos else "valid runs (no SLO given)"
        return (
            f"Saturation point: {self.spec.label(best.value)} ({rate}), the highest output "
            f"throughput among {among}."
        )


def _row(point: SweepPoint) -> SweepRow:
    result = point.result
    if result is None:
        status = point.verdict.status
        return SweepRow(point.value, "-", None, None, None, None, None, None, status, "no run")
    done = f"{result.completed:,}" + (f"/{result.requested:,}" if result.requested else "")
    tight = point.verdict.tightest
    if point.verdict.status is Status.INVALID or tight is None:
        reason = "; ".join(point.verdict.reasons)
    else:
        reason = f"{metric_label(tight.slo.metric)}: {tight.margin_text()}"
    return SweepRow(
        point.value,
        done,
        result.output_throughput,
        result.output_throughput_per_card,
        result.tokens_per_user,
        result.median_ttft_ms,
        result.median_tpot_ms,
        result.p99_itl_ms,
        point.verdict.status,
        reason,
    )


def saturation_point(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The PASS point with the highest output throughput; None if no point passes."""
    best: SweepPoint | None = None
    best_rate = -math.inf
    for point in points:
        rate = point.result.output_throughput if point.result else None
        if point.verdict.status is Status.PASS and rate is not None and rate > best_rate:
            best, best_rate = point, rate
    return best


def _value_of(result: BenchResult, variable: str) -> float | None:
    value = getattr(result, variable)
    if variable == "request_rate" and value is None:
        return math.inf
    return None if value is None else float(value)


def collect(
    spec: SweepSpec, results: Sequence[BenchResult] | Mapping[float, BenchResult | None]
) -> list[tuple[float, BenchResult | None]]:
    """Pair each sweep value with its run. A mapping is taken as given; a list (e.g. every
    line of one appended JSONL) is matched by the result's own `max_concurrency` /
    `request_rate`, the last run winning when a value was run more than once."""
    if isinstance(results, Mapping):
        return [(value, results.get(value)) for value in spec.values]
    by_value: dict[float, BenchResult] = {}
    for result in results:
        value = _value_of(result, spec.variable)
        if value is not None:
            by_value[value] = result
    return [(value, by_value.get(value)) for value in spec.values]


def build_sweep(
    spec: SweepSpec,
    results: Sequence[BenchResult] | Mapping[float, BenchResult | None],
    slos: Sequence[SLO] = (),
    expected_output_len: int | None = None,
    ignore_eos: bool = True,
) -> Sweep:
    """Judge every point of a sweep. A value with no recorded run is INVALID, not skipped.

    `expected_output_len` as in `evaluate`. When it is None and `ignore_eos` holds
    (bench_serving's default; False with `--disable-ignore-eos`), each run's own
    `fixed_output_len` is used: random datasets with `--random-range-ratio 1`.
    """
    points = []
    for value, result in collect(spec, results):
        if result is None:
            verdict = Verdict(Status.INVALID, (f"no run recorded for {spec.label(value)}",))
        else:
            auto = result.fixed_output_len if ignore_eos else None
            expected = expected_output_len or auto
            verdict = evaluate(result, slos, expected)
        points.append(SweepPoint(value, result, verdict))
    return Sweep(spec, tuple(slos), tuple(points))
