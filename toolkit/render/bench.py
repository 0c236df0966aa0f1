"""Terminal views of benchmark results: one run, its verdict, a sweep, a comparison.

Renderers take data from `toolkit.bench` and a `rich.console.Console` and only print, so the
CLI stays thin and the same data can be rendered to a test console.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from toolkit.bench.report import Comparison, MetricDelta
from toolkit.bench.results import (
    BenchResult,
    format_metric,
    format_number,
    metric_label,
    metric_unit,
)
from toolkit.bench.sweep import Sweep, format_value
from toolkit.bench.verdict import Status, Verdict

STATUS_STYLES = {Status.PASS: "bold green", Status.FAIL: "bold red", Status.INVALID: "bold yellow"}
_LATENCIES = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e_latency"))


def _status(status: Status) -> Text:
    return Text(status.value, style=STATUS_STYLES[status])


def render_result(result: BenchResult, console: Console, title: str | None = None) -> None:
    """Counts and throughputs, then a latency grid (mean / median / p99 in ms)."""
    done = f"{result.completed:,}" + (f" / {result.requested:,}" if result.requested else "")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(justify="right")
    facts.add_row("completed / requested", done)
    facts.add_row("duration", format_metric(result.duration, "duration"))
    for name in ("request_throughput", "input_throughput", "output_throughput"):
        facts.add_row(metric_label(name), format_metric(result.metric(name), name))
    cards = f"output throughput per card ({result.cards or '?'} cards)"
    facts.add_row(cards, format_metric(result.output_throughput_per_card, "tokens_per_user"))
    facts.add_row(
        "tokens/s per user (1000 / median TPOT)",
        format_metric(result.tokens_per_user, "tokens_per_user"),
    )
    facts.add_row("output tokens", format_number(result.total_output_tokens, 0))
    if result.raw.get("dataset_source"):
        facts.add_row("client", result.source)
        facts.add_row("prompts", str(result.raw["dataset_source"]))
    if result.accept_length is not None:
        facts.add_row("accept length", format_number(result.accept_length, 2))
    latency = Table(title="latency (ms)", title_justify="left")
    latency.add_column("metric", style="bold")
    for stat in ("mean", "median", "p99"):
        latency.add_column(stat, justify="right")
    for label, key in _LATENCIES:
        values = [result.metric(f"{stat}_{key}_ms") for stat in ("mean", "median", "p99")]
        latency.add_row(label, *(format_number(v, 2, strip=False) for v in values))
    heading = title or result.tag or f"{result.backend or 'bench'} run"
    console.print(Text(heading, style="bold underline"))
    console.print(facts)
    console.print(latency)


def render_verdict(verdict: Verdict, console: Console, label: str = "") -> None:
    """ "PASS  median TPOT 41.2 ms ≤ 50 ms: PASS, 8.8 ms (17.6%) headroom", coloured; INVALID
    lists every reason so the user sees all that went wrong at once."""
    line = Text(f"{label}: " if label else "")
    line.append_text(_status(verdict.status))
    reasons = list(verdict.reasons)
    if verdict.status is not Status.INVALID and verdict.tightest is not None:
        reasons = [c.describe() for c in verdict.checks]
    if len(reasons) == 1:
        line.append(f"  {reasons[0]}")
        console.print(line)
    else:
        console.print(line)
        for reason in reasons:
            console.print(f"  - {reason}", highlight=False)
    for note in verdict.notes:
        console.print(Text(f"  note: {note}", style="dim"))


def render_sweep(sweep: Sweep, console: Console, title: str | None = None) -> None:
    """The seed-002 table with a verdict column, then the saturation point sentence."""
    name = sweep.spec.variable.replace("_", " ")
    table = Table(title=title or f"{sweep.spec}", title_justify="left")
    table.add_column(name, justify="right")
    heads = ("completed", "output tok/s", "tok/s per card", "tok/s per user")
    for head in (*heads, "TTFT p50 (ms)", "TPOT p50 (ms)", "ITL p99 (ms)"):
        table.add_column(head, justify="right")
    table.add_column("verdict")
    table.add_column("why", overflow="fold")
    best = sweep.saturation
    for row in sweep.rows():
        marker = " *" if best is not None and row.value == best.value else ""
        table.add_row(
            format_value(row.value) + marker,
            row.completed,
            format_number(row.output_throughput, 0),
            format_number(row.per_card),
            format_number(row.per_user),
            format_number(row.median_ttft_ms),
            format_number(row.median_tpot_ms, 2, strip=False),
            format_number(row.p99_itl_ms, 2, strip=False),
            _status(row.status),
            row.reason,
        )
    console.print(table)
    style = "bold" if best is not None else "bold red"
    console.print(Text(sweep.saturation_text(), style=style))


def _delta_cells(row: MetricDelta) -> tuple[str, Text]:
    if row.delta is None:
        return "-", Text("-")
    pct = "-" if row.delta_pct is None else f"{row.delta_pct:+.1f}%"
    style = {True: "green", False: "red", None: ""}[row.improved]
    sign = "+" if row.delta > 0 else "-" if row.delta < 0 else "±"
    return sign + format_number(abs(row.delta), 2), Text(pct, style=style)


def render_comparison(comparison: Comparison, console: Console) -> None:
    """Metric, A, B, B − A and %: green where B is better, red where worse; then verdicts."""
    label_a, label_b = comparison.labels
    table = Table(title=f"{label_a} vs {label_b}", title_justify="left")
    table.add_column("metric", style="bold")
    for head in (label_a, label_b, "Δ", "Δ%"):
        table.add_column(head, justify="right")
    for row in comparison.rows:
        delta, pct = _delta_cells(row)
        unit = metric_unit(row.metric)
        name = metric_label(row.metric) + (f" ({unit})" if unit else "")
        table.add_row(name, format_number(row.a, 2), format_number(row.b, 2), delta, pct)
    console.print(table)
    for label, verdict in zip(comparison.labels, comparison.verdicts, strict=True):
        render_verdict(verdict, console, label)


def render_sweep_comparison(
    pairs: Sequence[tuple[float, Comparison]], variable: str, console: Console
) -> None:
    """One row per shared sweep value: output tok/s and median TPOT in both, with Δ%."""
    if not pairs:
        console.print(Text("the two sweeps share no value with a run in both", style="yellow"))
        return
    label_a, label_b = pairs[0][1].labels
    table = Table(title=f"{label_a} vs {label_b} by {variable}", title_justify="left")
    table.add_column(variable.replace("_", " "), justify="right")
    for head in ("output tok/s", "Δ%", "TPOT p50 (ms)", "Δ%", label_a, label_b):
        table.add_column(head, justify="right")
    for value, comparison in pairs:
        rows = {row.metric: row for row in comparison.rows}
        cells: list[str | Text] = [format_value(value)]
        for metric in ("output_throughput", "median_tpot_ms"):
            row = rows.get(metric)
            if row is None:
                cells += ["-", "-"]
                continue
            cells += [
                f"{format_number(row.a, 1)} → {format_number(row.b, 1)}",
                _delta_cells(row)[1],
            ]
        cells += [_status(v.status) for v in comparison.verdicts]
        table.add_row(*cells)
    console.print(table)
