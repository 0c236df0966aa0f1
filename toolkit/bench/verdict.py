"""Decide whether a benchmark run is valid, and if so whether it meets its SLOs.

bench_serving reports success even when nothing useful happened: srt-slurm #429 saw every KV
transfer fail while the benchmark printed `Total generated tokens: 0`. So the verdict is a
gate first: a run that lost requests, generated nothing, came back short under ignore-eos, or
logged errors is INVALID and never PASS. Only a valid run is compared with its SLOs, and the
verdict says by how much it passed or failed ("8.8 ms (17.6%) headroom").
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from toolkit.bench.results import (
    METRIC_NAMES,
    BenchError,
    BenchResult,
    format_metric,
    format_number,
    metric_label,
    metric_unit,
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_PRETTY = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}
_NEGATED = {"<=": ">", "<": "≥", ">=": "<", ">": "≤"}
_SLO_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=|<|>|≤|≥)\s*([^\s]+)\s*$")


class Status(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INVALID = "INVALID"


def _check_metric(metric: str) -> str:
    if metric in METRIC_NAMES:
        return metric
    close = difflib.get_close_matches(metric, METRIC_NAMES, n=1)
    known = ", ".join(METRIC_NAMES)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known metrics: {known}"
    raise BenchError(f"unknown SLO metric {metric!r}{hint}")


def _check_bound(text: Any, where: str) -> float:
    if isinstance(text, bool):
        raise BenchError(f"{where}: the bound must be a number, got {text!r}")
    try:
        bound = float(text)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: the bound must be a number, got {text!r}") from None
    if not math.isfinite(bound):
        raise BenchError(f"{where}: the bound must be a finite number, got {text!r}")
    return bound


@dataclass(frozen=True)
class SLO:
    """A service-level objective on one metric, e.g. `median_tpot_ms <= 50`."""

    metric: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.op not in _OPS:
            raise BenchError(f"SLO {self.metric}: unknown comparison {self.op!r}; use <=, <, >=, >")

    @classmethod
    def parse(cls, text: str) -> SLO:
        """Parse "median_tpot_ms<=50" (spaces, ≤ and ≥ allowed)."""
        match = _SLO_RE.match(text)
        if not match:
            raise BenchError(
                f"cannot parse SLO {text!r}: write METRIC<=NUMBER, e.g. 'median_tpot_ms<=50'"
            )
        metric, op, bound = match.groups()
        op = {"≤": "<=", "≥": ">="}.get(op, op)
        return cls(_check_metric(metric), op, _check_bound(bound, f"SLO {text!r}"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SLO:
        """Parse a profile entry: {metric: median_tpot_ms, max: 50} or {metric: …, min: …}."""
        # A bound given as null is absent (the plan's JSON carries both keys).
        data = {k: v for k, v in data.items() if v is not None}
        unknown = sorted(set(data) - {"metric", "max", "min"})
        if unknown:
            raise BenchError(f"SLO {dict(data)}: unknown keys {unknown}; use metric and max or min")
        if "metric" not in data or ("max" in data) == ("min" in data):
            raise BenchError(f"SLO {dict(data)}: give a metric and exactly one of max or min")
        op, key = ("<=", "max") if "max" in data else (">=", "min")
        metric = _check_metric(str(data["metric"]))
        return cls(metric, op, _check_bound(data[key], f"SLO {metric}.{key}"))

    @property
    def lower_is_better(self) -> bool:
        return self.op in ("<=", "<")

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def describe(self) -> str:
        """ "median TPOT ≤ 50 ms" """
        bound = format_metric(self.bound, self.metric)
        return f"{metric_label(self.metric)} {_PRETTY[self.op]} {bound}"

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:.15g}"


def parse_slos(items: Iterable[str | Mapping[str, Any] | Any]) -> tuple[SLO, ...]:
    """SLOs from strings, dicts, or objects with `metric` and `max` (profile `Slo` models)."""
    slos = []
    for item in items:
        if isinstance(item, SLO):
            slos.append(item)
        elif isinstance(item, str):
            slos.append(SLO.parse(item))
        elif isinstance(item, Mapping):
            slos.append(SLO.from_dict(item))
        elif hasattr(item, "metric") and hasattr(item, "max"):
            slos.append(SLO.from_dict({"metric": item.metric, "max": item.max}))
        else:
            raise BenchError(f"cannot read an SLO from {item!r}")
    return tuple(slos)


@dataclass(frozen=True)
class SLOCheck:
    """One SLO against one measured value. `margin` > 0 is headroom, < 0 is overshoot."""

    slo: SLO
    value: float

    @property
    def passed(self) -> bool:
        return self.slo.holds(self.value)

    @property
    def margin(self) -> float:
        diff = self.slo.bound - self.value
        return diff if self.slo.lower_is_better else -diff

    @property
    def margin_pct(self) -> float | None:
        return None if self.slo.bound == 0 else 100.0 * self.margin / abs(self.slo.bound)

    def margin_text(self) -> str:
        """ "8.8 ms (17.6%) headroom" or "2.9 ms (5.9%) over" """
        unit = metric_unit(self.slo.metric)
        amount = format_number(abs(self.margin)) + (f" {unit}" if unit else "")
        if self.margin_pct is not None:
            amount += f" ({format_number(abs(self.margin_pct))}%)"
        word = "headroom" if self.passed else ("over" if self.slo.lower_is_better else "short")
        return f"{amount} {word}"

    def describe(self) -> str:
        """ "median TPOT 41.2 ms ≤ 50 ms: PASS, 8.8 ms (17.6%) headroom" """
        slo = self.slo
        sign = _PRETTY[slo.op] if self.passed else _NEGATED[slo.op]
        head = f"{metric_label(slo.metric)} {format_metric(self.value, slo.metric)} {sign} "
        head += format_metric(slo.bound, slo.metric)
        return f"{head}: {'PASS' if self.passed else 'FAIL'}, {self.margin_text()}"


@dataclass(frozen=True)
class Verdict:
    """PASS/FAIL/INVALID with the reasons a person should read and the per-SLO checks."""

    status: Status
    reasons: tuple[str, ...]
    checks: tuple[SLOCheck, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def tightest(self) -> SLOCheck | None:
        """The check with the least headroom (relative, so SLOs in other units compare)."""
        if not self.checks:
            return None
        return min(self.checks, key=lambda c: c.margin if c.margin_pct is None else c.margin_pct)

    @property
    def margin(self) -> float | None:
        """Headroom (> 0) or overshoot (< 0) of the tightest SLO, in its unit."""
        return None if self.tightest is None else self.tightest.margin

    @property
    def margin_pct(self) -> float | None:
        return None if self.tightest is None else self.tightest.margin_pct

    @property
    def summary(self) -> str:
        """One line: "PASS: median TPOT 41.2 ms ≤ 50 ms: PASS, …" or "INVALID: reason; …"."""
        if self.status is Status.INVALID:
            return f"INVALID: {'; '.join(self.reasons)}"
        tight = self.tightest
        return f"{self.status.value}: {tight.describe() if tight else '; '.join(self.reasons)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "margin": self.margin,
            "margin_pct": self.margin_pct,
            "checks": [
                {"slo": str(c.slo), "value": c.value, "passed": c.passed, "margin": c.margin}
                for c in self.checks
            ],
        }


def validity_reasons(result: BenchResult, expected_output_len: int | None = None) -> list[str]:
    """Why a run cannot be trusted; empty when it can.

    `expected_output_len` is the output length every request asked for under ignore-eos
    (e.g. `result.fixed_output_len`); leave it None when lengths vary or EOS may stop early.
    """
    reasons = []
    if result.requested is not None and result.completed < result.requested:
        reasons.append(
            f"only {result.completed:,} of {result.requested:,} requests completed "
            f"({result.requested - result.completed:,} failed)"
        )
    if result.completed == 0 and result.requested is None:
        reasons.append("no request completed")
    if not result.total_output_tokens:
        reasons.append("no output tokens were generated (total_output_tokens is 0)")
    elif expected_output_len:
        reasons.extend(_short_output_reasons(result, expected_output_len))
    reasons.extend(_error_reasons(result))
    return reasons


def _short_output_reasons(result: BenchResult, expected: int) -> list[str]:
    lens = result.output_lens
    if lens:
        errors = result.errors if result.errors and len(result.errors) == len(lens) else None
        short = [n for i, n in enumerate(lens) if n < expected and not (errors and errors[i])]
        if not short:
            return []
        return [
            f"{len(short):,} of {len(lens):,} requests returned fewer than {expected:,} output "
            f"tokens (shortest: {min(short):,}); with ignore-eos each should return {expected:,}"
        ]
    total, want = result.total_output_tokens or 0, result.completed * expected
    if total >= want:
        return []
    return [
        f"total_output_tokens {total:,} < {result.completed:,} completed × {expected:,} = "
        f"{want:,} expected with ignore-eos ({format_number(100.0 * total / want)}%)"
    ]


def _error_reasons(result: BenchResult) -> list[str]:
    errors = [e for e in (result.errors or ()) if e.strip()]
    if not errors:
        return []
    first = " ".join(errors[0].split())
    first = first if len(first) <= 160 else first[:157] + "..."
    return [f"{len(errors):,} request(s) reported errors; first: {first!r}"]


def evaluate(
    result: BenchResult, slos: Sequence[SLO] = (), expected_output_len: int | None = None
) -> Verdict:
    """The validity gate, then each SLO. With no SLO a valid run PASSes (noted as such)."""
    notes = []
    if result.requested is None:
        notes.append("requested count unknown: completed vs requested was not checked")
    reasons = validity_reasons(result, expected_output_len)
    checks = []
    for slo in slos:
        value = result.metric(slo.metric)
        if value is None:
            reasons.append(f"{slo.metric} is missing from the result, so {slo} cannot be judged")
        else:
            checks.append(SLOCheck(slo, value))
    if reasons:
        return Verdict(Status.INVALID, tuple(reasons), notes=tuple(notes))
    if not slos:
        notes.append("no SLO given: the run is valid, nothing was compared")
        return Verdict(Status.PASS, ("valid run; no SLO given",), notes=tuple(notes))
    failed = [c.describe() for c in checks if not c.passed]
    status = Status.FAIL if failed else Status.PASS
    described = failed or [c.describe() for c in checks]
    return Verdict(status, tuple(described), tuple(checks), tuple(notes))
