"""Typed results of one benchmark run, parsed from bench_serving's output file.

`python -m sglang.bench_serving --output-file F` appends one JSON object per run to F. Three
quirks make a naive `json.loads(path.read_text())` wrong (protocol notes §2.6):

- `request_rate` is written as the bare token `Infinity`, which strict JSON parsers reject
  (Python's `json` accepts it; so do we);
- metrics of a run with no successful request are `NaN`; we turn them into `None` so that
  nothing downstream compares against a NaN;
- the file is appended to while a run is in progress, so its last line can be half written.
  We skip such a line instead of failing, and say so in the log.

The JSONL has no `failed` field: the caller passes the number of prompts it asked for as
`requested`. `vllm bench serve --save-result` files (one JSON object per line, §6) are read
too: they carry `num_prompts` and `failed`, and spell the end-to-end latency `e2el`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from toolkit.errors import ToolkitError

log = logging.getLogger(__name__)


class BenchError(ToolkitError):
    """A benchmark result, SLO or sweep spec is malformed; the message says where and why."""


# Every numeric metric bench_serving writes (§2.6), in its order. SLOs may name any of them.
LATENCIES = ("e2e_latency", "ttft", "tpot", "itl")
_STATS = ("mean", "median", "std", "p90", "p95", "p99")
METRIC_NAMES: tuple[str, ...] = (
    "duration",
    "completed",
    "total_input_tokens",
    "total_output_tokens",
    "total_output_tokens_retokenized",
    "request_throughput",
    "input_throughput",
    "output_throughput",
    "total_throughput",
    *(f"{stat}_{lat}_ms" for lat in LATENCIES for stat in _STATS),
    "concurrency",
    "accept_length",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
    # Derived by toolkit: per card of the deployment, and per user (1000 / median TPOT).
    "output_throughput_per_card",
    "tokens_per_user",
)
_LATENCY_NAMES = {"e2e_latency": "E2E", "ttft": "TTFT", "tpot": "TPOT", "itl": "ITL"}
_UNITS = {
    "request_throughput": "req/s",
    "duration": "s",
    "max_output_tokens_per_s": "tok/s",
    "output_throughput_per_card": "tok/s",
    "tokens_per_user": "tok/s",
}


def metric_unit(metric: str) -> str:
    """The unit a metric is measured in: "ms", "tok/s", "req/s", "s" or "" (a count)."""
    if metric.endswith("_ms"):
        return "ms"
    if metric in _UNITS:
        return _UNITS[metric]
    return "tok/s" if metric.endswith("_throughput") else ""


def metric_label(metric: str) -> str:
    """A human name: "median_tpot_ms" -> "median TPOT", "output_throughput" -> "output
    throughput"."""
    if metric.endswith("_ms"):
        stat, _, lat = metric[: -len("_ms")].partition("_")
        if lat in _LATENCY_NAMES:
            return f"{stat} {_LATENCY_NAMES[lat]}"
    return metric.replace("_", " ")


def lower_is_better(metric: str) -> bool:
    """Latencies and durations improve downwards; throughputs and counts upwards."""
    return metric.endswith("_ms") or metric == "duration"


def format_number(value: float | None, digits: int = 1, strip: bool = True) -> str:
    """Format for people: thousands separators, trailing zeros dropped (unless `strip` is
    False, for table columns), "-" for missing.

    >>> format_number(41.2), format_number(50.0), format_number(175241.3), format_number(None)
    ('41.2', '50', '175,241', '-')
    """
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if strip and "." in text else text


def format_metric(value: float | None, metric: str) -> str:
    """A value with its unit: "41.2 ms", "2,132 tok/s"."""
    unit = metric_unit(metric)
    text = format_number(value, 2 if metric == "accept_length" else 1)
    return f"{text} {unit}" if unit and value is not None else text


def _num(value: Any) -> float | None:
    """A float, or None for null/NaN; the strings "inf"/"Infinity" (vLLM) become inf."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("inf", "+inf", "infinity"):
            return math.inf
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and math.isfinite(number) else None


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run. Metric fields keep bench_serving's key names, so an SLO such as
    `median_tpot_ms<=50` names a field directly. Latencies are in ms, throughputs per second.
    """

    completed: int
    requested: int | None = None
    duration: float | None = None
    request_throughput: float | None = None
    input_throughput: float | None = None
    output_throughput: float | None = None
    total_throughput: float | None = None
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    mean_ttft_ms: float | None = None
    median_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    mean_tpot_ms: float | None = None
    median_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    mean_itl_ms: float | None = None
    median_itl_ms: float | None = None
    p99_itl_ms: float | None = None
    mean_e2e_latency_ms: float | None = None
    median_e2e_latency_ms: float | None = None
    p99_e2e_latency_ms: float | None = None
    accept_length: float | None = None
    max_concurrency: int | None = None
    request_rate: float | None = None
    random_input_len: int | None = None
    random_output_len: int | None = None
    random_range_ratio: float | None = None
    backend: str | None = None
    dataset_name: str | None = None
    tag: str | None = None
    source: str = "sglang"  # the client that measured it: "sglang" or "vllm"
    # Accelerator cards the deployment used (from the plan), for per-card throughput.
    cards: int | None = None
    # Per request, only with --output-details; failed requests count 0 tokens and an error.
    output_lens: tuple[int, ...] | None = None
    errors: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], requested: int | None = None) -> BenchResult:
        """Build from one bench_serving JSONL object (or a vLLM result, or our `to_dict()`).

        `requested` is the number of prompts asked for; it defaults to vLLM's `num_prompts`
        or a previously saved `requested`.
        """
        if "completed" not in raw:
            raise BenchError("not a benchmark result: the key 'completed' is missing")
        source = _str(raw.get("client"))
        if source is None:
            source = "vllm" if "failed" in raw and "num_prompts" in raw else "sglang"
        if requested is None:
            requested = _int(raw.get("requested", raw.get("num_prompts")))
        values = {name: _num(raw.get(name)) for name in _FLOAT_FIELDS}
        values |= {name: _int(raw.get(name)) for name in _INT_FIELDS}
        if source == "vllm":
            values |= _vllm_extras(raw, values)
        return cls(
            completed=_int(raw.get("completed")) or 0,
            requested=requested,
            backend=_str(raw.get("backend")),
            dataset_name=_str(raw.get("dataset_name")),
            tag=_str(raw.get("tag", raw.get("label"))),
            source=_str(raw.get("source")) or source,
            output_lens=_int_tuple(raw.get("output_lens")),
            errors=_str_tuple(raw.get("errors")),
            raw=MappingProxyType(dict(raw)),
            **values,
        )

    @property
    def output_throughput_per_card(self) -> float | None:
        """Output tokens/s divided by the deployment's cards: what compares a 1P1D on 32 cards
        with a 2P1D on 48."""
        if self.output_throughput is None or not self.cards:
            return None
        return self.output_throughput / self.cards

    @property
    def tokens_per_user(self) -> float | None:
        """Interactivity: tokens/s one user sees while decoding, 1000 / median TPOT (ms)."""
        tpot = self.median_tpot_ms
        return 1000.0 / tpot if tpot else None

    @property
    def failed(self) -> int | None:
        """Requests asked for but not completed (None when `requested` is unknown)."""
        return None if self.requested is None else max(self.requested - self.completed, 0)

    @property
    def fixed_output_len(self) -> int | None:
        """The output length every request asked for, when the dataset fixes it (random or
        random-ids with `--random-range-ratio 1`); None when lengths vary or are unknown."""
        fixed = self.dataset_name in ("random", "random-ids") and self.random_range_ratio == 1
        return self.random_output_len if fixed else None

    def metric(self, name: str) -> float | None:
        """A metric by bench_serving key, including ones not kept as fields (p90/p95/std)."""
        if name in _FLOAT_FIELDS or name in _INT_FIELDS or name == "completed":
            value = getattr(self, name)
            return None if value is None else float(value)
        if name in ("output_throughput_per_card", "tokens_per_user"):
            return getattr(self, name)
        if name not in METRIC_NAMES:
            raise BenchError(f"unknown metric {name!r}")
        alias = name.replace("e2e_latency", "e2el") if self.source == "vllm" else name
        return _num(self.raw.get(name, self.raw.get(alias)))

    def with_requested(self, requested: int) -> BenchResult:
        """The same result with the number of prompts asked for (for the validity gate)."""
        return dataclasses.replace(self, requested=requested)

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        """A strict-JSON-safe dict (inf becomes "inf", NaN null); `from_dict` reads it back."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "raw"}
        for name in ("output_lens", "errors"):
            if data[name] is not None:
                data[name] = list(data[name])
        if include_raw:
            data["raw"] = dict(self.raw)
        return _json_safe(data)

    def to_json(self, include_raw: bool = False, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(include_raw), indent=indent, allow_nan=False)


_INT_FIELDS = (
    "cards",
    "total_input_tokens",
    "total_output_tokens",
    "max_concurrency",
    "random_input_len",
    "random_output_len",
)
_FLOAT_FIELDS = (
    "duration",
    "request_throughput",
    "input_throughput",
    "output_throughput",
    "total_throughput",
    *(f"{stat}_{lat}_ms" for lat in LATENCIES for stat in ("mean", "median", "p99")),
    "accept_length",
    "request_rate",
    "random_range_ratio",
)


def _vllm_extras(raw: Mapping[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """vLLM spells some metrics differently and omits input/total throughput."""
    extras: dict[str, Any] = {}
    for stat in ("mean", "median", "p99"):
        extras[f"{stat}_e2e_latency_ms"] = _num(raw.get(f"{stat}_e2el_ms"))
    extras["total_throughput"] = _num(raw.get("total_token_throughput"))
    extras["accept_length"] = _num(raw.get("spec_decode_acceptance_length"))
    duration, tokens = values.get("duration"), values.get("total_input_tokens")
    if duration and tokens is not None:
        extras["input_throughput"] = tokens / duration
    return extras


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(_int(item) or 0 for item in value)


def _str_tuple(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple("" if item is None else str(item) for item in value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def parse_results(
    text: str, requested: int | None = None, origin: str = "<text>"
) -> list[BenchResult]:
    """Parse JSONL text (one run per line). A last line that is not valid JSON and has no
    newline yet is a run still being written: it is skipped. Any other bad line is an error
    that names `origin` and the line number."""
    lines = text.splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    results = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if number - 1 == last and not text.endswith("\n"):
                log.warning("%s:%d: skipped a partly written last line", origin, number)
                continue
            whole = _whole_document(text)
            if whole is not None:
                return [BenchResult.from_dict(item, requested) for item in whole]
            raise BenchError(
                f"{origin}:{number}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise BenchError(f"{origin}:{number}: expected a JSON object, got {type(obj).__name__}")
        try:
            results.append(BenchResult.from_dict(obj, requested))
        except BenchError as exc:
            raise BenchError(f"{origin}:{number}: {exc}") from None
    return results


def _whole_document(text: str) -> list[dict[str, Any]] | None:
    """A pretty-printed single result (or a list of them) also counts as a results file."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = doc if isinstance(doc, list) else [doc]
    return items if items and all(isinstance(item, dict) for item in items) else None


def load_results(path: str | Path, requested: int | None = None) -> list[BenchResult]:
    """Read every run in a bench_serving `--output-file` (or a vLLM result file), in order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BenchError(f"{path}: cannot read the benchmark results ({exc.strerror})") from None
    return parse_results(text, requested, origin=str(path))
