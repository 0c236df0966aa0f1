"""Files a person reads after a benchmark: the sweep plot, a Markdown/HTML report, a diff.

The plot answers "where does it saturate": output throughput and latencies against the swept
value, with the SLO bound drawn and the saturation point marked. The reports are
self-contained so they can be attached to a ticket: the Markdown references the PNG next to
it, the HTML embeds it as base64. `compare` puts two runs side by side with deltas, so a
tuning change shows up as "TPOT −12.4%" rather than two tables to eyeball.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.bench.per_card import Series, plot_per_card, series_label
from toolkit.bench.results import (
    BenchResult,
    format_metric,
    format_number,
    lower_is_better,
    metric_label,
    metric_unit,
)
from toolkit.bench.sweep import Sweep, SweepRow, format_value
from toolkit.bench.verdict import SLO, Status, Verdict, evaluate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STATUS_COLORS = {Status.PASS: "#2e7d32", Status.FAIL: "#c62828", Status.INVALID: "#ef8f00"}
_DEFAULT_LATENCIES = ("median_ttft_ms", "median_tpot_ms")
_SERIES_COLORS = ("#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#ad1457")
SWEEP_COLUMNS = (
    "Completed",
    "Output tok/s",
    "Tok/s per card",
    "Tok/s per user",
    "TTFT p50 (ms)",
    "TPOT p50 (ms)",
    "ITL p99 (ms)",
)


_Plotted = tuple[float, BenchResult, Status]


def _plotted(sweep: Sweep) -> list[_Plotted]:
    """Points that can go on a log axis: a run exists and the value is finite."""
    return [
        (p.value, p.result, p.verdict.status)
        for p in sweep.points
        if p.result is not None and math.isfinite(p.value)
    ]


def plot_sweep(sweep: Sweep, path: str | Path, profile: str = "") -> Path:
    """Write a two-panel PNG: output throughput, then latencies (log scale) with SLO bounds,
    both against the swept value on a log2 axis; the saturation point is starred."""
    # A bare Figure renders with Agg and touches no pyplot global state or GUI backend.
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    points = _plotted(sweep)
    fig = Figure(figsize=(9, 8), dpi=120)
    top, bottom = fig.subplots(2, 1, sharex=True)
    _throughput_panel(top, sweep, points)
    _latency_panel(bottom, sweep, points)
    xs = [x for x, _, _ in points]
    if xs:
        bottom.set_xscale("log", base=2)
        bottom.xaxis.set_major_locator(FixedLocator(xs))
        bottom.xaxis.set_minor_locator(NullLocator())
        bottom.set_xticklabels([format_value(x) for x in xs])
    bottom.set_xlabel(sweep.spec.variable.replace("_", " "))
    plain = FuncFormatter(lambda y, _pos: format_number(y, 0))
    top.yaxis.set_major_formatter(plain)
    bottom.yaxis.set_major_formatter(plain)
    _mark_saturation(top, bottom, sweep)
    skipped = [sweep.spec.label(p.value) for p in sweep.points if not math.isfinite(p.value)]
    if skipped:
        note = f"not on the log axis: {', '.join(skipped)} (see the table)"
        bottom.text(0.99, 0.02, note, transform=bottom.transAxes, ha="right", fontsize=8)
    title = f"{profile}: {sweep.spec.variable} sweep" if profile else f"{sweep.spec} sweep"
    slos = ", ".join(s.describe() for s in sweep.slos) or "no SLO"
    fig.suptitle(f"{title}\nSLO: {slos}", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _throughput_panel(ax: Axes, sweep: Sweep, points: list[_Plotted]) -> None:
    xs = [x for x, _, _ in points]
    ys = [r.output_throughput for _, r, _ in points]
    ax.plot(xs, ys, color="#1565c0", linewidth=2, label="output throughput", zorder=2)
    for status in Status:
        sel = [(x, r.output_throughput) for x, r, s in points if s is status]
        if sel:
            ax.scatter(
                *zip(*sel, strict=True),
                color=STATUS_COLORS[status],
                s=45,
                zorder=3,
                label=status.value,
                marker="o" if status is not Status.INVALID else "X",
            )
    for slo in sweep.slos:
        if metric_unit(slo.metric) == "tok/s":
            ax.axhline(
                slo.bound,
                color="#1565c0",
                linestyle="--",
                linewidth=1.2,
                label=f"SLO: {slo.describe()}",
            )
    ax.set_ylabel("output throughput (tok/s)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax)


def _latency_metrics(sweep: Sweep) -> list[str]:
    metrics = list(_DEFAULT_LATENCIES)
    for slo in sweep.slos:
        if slo.metric.endswith("_ms") and slo.metric not in metrics:
            metrics.append(slo.metric)
    return metrics


def _latency_panel(ax: Axes, sweep: Sweep, points: list[_Plotted]) -> None:
    for metric, color in zip(_latency_metrics(sweep), _SERIES_COLORS, strict=False):
        sel = [(x, r.metric(metric)) for x, r, _ in points if r.metric(metric)]
        if sel:
            ax.plot(
                *zip(*sel, strict=True),
                marker="o",
                markersize=4,
                color=color,
                linewidth=1.8,
                label=metric_label(metric),
            )
        for slo in (s for s in sweep.slos if s.metric == metric):
            ax.axhline(
                slo.bound,
                color=color,
                linestyle="--",
                linewidth=1.2,
                label=f"SLO: {slo.describe()}",
            )
    ax.set_yscale("log")
    # Label 2× and 5× too: latencies within one decade would otherwise show no tick label.
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _pos: format_number(y, 0)))
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax)


def _mark_saturation(top: Axes, bottom: Axes, sweep: Sweep) -> None:
    best = sweep.saturation
    if best is None or best.result is None or not math.isfinite(best.value):
        top.set_title("no saturation point: no run passes the SLO", fontsize=10, color="#c62828")
        return
    rate = best.result.output_throughput
    top.scatter(
        [best.value],
        [rate],
        marker="*",
        s=320,
        color="#f9a825",
        edgecolor="black",
        zorder=4,
        label="saturation point",
    )
    for ax in (top, bottom):
        ax.axvline(best.value, color="#f9a825", linestyle=":", linewidth=1.5, zorder=1)
    text = f"saturation: {sweep.spec.label(best.value)}\n{format_metric(rate, 'output_throughput')}"
    top.annotate(
        text,
        xy=(best.value, rate),
        xytext=(12, -34),
        textcoords="offset points",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85},
    )
    _legend(top)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=9)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    png: Path | None
    per_card: Path | None = None


def _row_cells(row: SweepRow) -> list[str]:
    return [
        row.completed,
        format_number(row.output_throughput, 0),
        format_number(row.per_card),
        format_number(row.per_user),
        format_number(row.median_ttft_ms),
        format_number(row.median_tpot_ms, 2, strip=False),
        format_number(row.p99_itl_ms, 2, strip=False),
    ]


def _header_facts(
    sweep: Sweep, profile: str, run_id: str, date: datetime, meta: Mapping[str, str]
) -> list[tuple[str, str]]:
    first = next((p.result for p in sweep.points if p.result is not None), None)
    facts = [("Profile", profile), ("Run id", run_id), ("Date", date.isoformat(timespec="seconds"))]
    facts.append(("SLO", ", ".join(s.describe() for s in sweep.slos) or "none"))
    facts.append(("Sweep", str(sweep.spec)))
    if first is not None:
        shape = f"{first.dataset_name or '?'}, {first.random_input_len or '?'} in / "
        shape += f"{first.random_output_len or '?'} out, range ratio {first.random_range_ratio}"
        facts += [("Backend", first.backend or "?"), ("Dataset", shape)]
    return facts + list(meta.items())


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(
    sweep: Sweep, facts: list[tuple[str, str]], png: str | None, per_card: str | None
) -> str:
    name = sweep.spec.variable.replace("_", " ").capitalize()
    lines = [f"# Benchmark report: {_md(facts[0][1])}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {_md(str(value))} |" for key, value in facts]
    lines += ["", "## Result", "", f"**{sweep.saturation_text()}**", ""]
    if png:
        lines += [f"![{sweep.spec.variable} sweep]({png})", ""]
    if per_card:
        lines += [f"![output tokens/s per card against tokens/s per user]({per_card})", ""]
    lines += ["## Sweep", "", f"| {name} | {' | '.join(SWEEP_COLUMNS)} | Verdict |"]
    lines.append("|" + "---:|" * (len(SWEEP_COLUMNS) + 1) + "---|")
    for row in sweep.rows():
        cells = [format_value(row.value), *_row_cells(row), row.status.value]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    for point in sweep.points:
        verdict = point.verdict
        lines.append(f"- **{sweep.spec.label(point.value)}: {verdict.status.value}**")
        lines += [f"  - {_md(reason)}" for reason in verdict.reasons]
        lines += [f"  - note: {_md(note)}" for note in verdict.notes]
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}"
    "td.n{text-align:right}img{max-width:100%}.PASS{color:#2e7d32}.FAIL{color:#c62828}"
    ".INVALID{color:#ef8f00}"
)


def _html(sweep: Sweep, facts: list[tuple[str, str]], pngs: Sequence[bytes]) -> str:
    esc = html.escape
    name = sweep.spec.variable.replace("_", " ").capitalize()
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">']
    out += [f"<title>Benchmark report: {esc(facts[0][1])}</title><style>{_CSS}</style></head>"]
    out += [f"<body><h1>Benchmark report: {esc(facts[0][1])}</h1><table>"]
    out += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts]
    out += ["</table><h2>Result</h2>", f"<p><strong>{esc(sweep.saturation_text())}</strong></p>"]
    for png_bytes in pngs:
        data = base64.b64encode(png_bytes).decode("ascii")
        out.append(f'<img alt="sweep plot" src="data:image/png;base64,{data}">')
    heads = "".join(f"<th>{esc(h)}</th>" for h in (name, *SWEEP_COLUMNS, "Verdict"))
    out += ["<h2>Sweep</h2><table>", f"<tr>{heads}</tr>"]
    for row in sweep.rows():
        cells = "".join(f'<td class="n">{esc(c)}</td>' for c in _row_cells(row))
        status = row.status.value
        out.append(
            f'<tr><td class="n">{esc(format_value(row.value))}</td>{cells}'
            f'<td class="{status}" title="{esc(row.reason)}">{status}</td></tr>'
        )
    out.append("</table><h2>Verdicts</h2><ul>")
    for point in sweep.points:
        status = point.verdict.status.value
        items = "".join(f"<li>{esc(r)}</li>" for r in point.verdict.reasons)
        label = esc(sweep.spec.label(point.value))
        out.append(f'<li><strong class="{status}">{label}: {status}</strong><ul>{items}</ul></li>')
    return "\n".join([*out, "</ul></body></html>", ""])


def write_report(
    out_dir: str | Path,
    sweep: Sweep,
    profile: str,
    run_id: str,
    date: datetime | None = None,
    meta: Mapping[str, str] | None = None,
    plot: bool = True,
) -> ReportFiles:
    """Write `report.md`, `report.html` and (with `plot`) `sweep.png` into `out_dir`.

    `meta` adds rows to the header table (e.g. "Hosts", "Command")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = _header_facts(sweep, profile, run_id, date or datetime.now(timezone.utc), meta or {})
    png = plot_sweep(sweep, out / "sweep.png", profile) if plot else None
    per_card = None
    if plot:
        results = tuple(p.result for p in sweep.points if p.result is not None)
        label = series_label(profile or str(sweep.spec), results)
        title = f"{profile}: output tokens/s per card vs tokens/s per user"
        per_card = plot_per_card([Series(label, results)], sweep.slos, out / "per-card.png", title)
    markdown = out / "report.md"
    names = (png.name if png else None, per_card.name if per_card else None)
    markdown.write_text(_markdown(sweep, facts, *names), encoding="utf-8")
    page = out / "report.html"
    pngs = [p.read_bytes() for p in (png, per_card) if p is not None]
    page.write_text(_html(sweep, facts, pngs), encoding="utf-8")
    return ReportFiles(markdown, page, png, per_card)


COMPARE_METRICS = (
    "completed",
    "duration",
    "request_throughput",
    "output_throughput",
    "total_throughput",
    *(
        f"{s}_{lat}_ms"
        for lat in ("ttft", "tpot", "itl", "e2e_latency")
        for s in ("mean", "median", "p99")
    ),
    "accept_length",
)


@dataclass(frozen=True)
class MetricDelta:
    """One metric in both runs; `improved` is direction-aware (lower latency is better)."""

    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def delta_pct(self) -> float | None:
        return None if self.delta is None or not self.a else 100.0 * self.delta / abs(self.a)

    @property
    def improved(self) -> bool | None:
        """True when B is better than A, False when worse, None when equal or unknown."""
        if not self.delta:
            return None
        return (self.delta < 0) == lower_is_better(self.metric)


@dataclass(frozen=True)
class Comparison:
    labels: tuple[str, str]
    rows: tuple[MetricDelta, ...]
    verdicts: tuple[Verdict, Verdict]


def compare(
    a: BenchResult,
    b: BenchResult,
    slos: Sequence[SLO] = (),
    labels: tuple[str, str] = ("A", "B"),
    expected_output_len: int | None = None,
) -> Comparison:
    """Two runs side by side: every metric either run reports, B − A and %, both verdicts."""
    rows = tuple(
        MetricDelta(m, a.metric(m), b.metric(m))
        for m in COMPARE_METRICS
        if a.metric(m) is not None or b.metric(m) is not None
    )
    verdicts = (evaluate(a, slos, expected_output_len), evaluate(b, slos, expected_output_len))
    return Comparison(labels, rows, verdicts)


def compare_sweeps(
    a: Sweep, b: Sweep, labels: tuple[str, str] = ("A", "B")
) -> list[tuple[float, Comparison]]:
    """Compare two sweeps point by point, over the values both ran (SLOs are taken from A)."""
    b_points = {p.value: p for p in b.points}
    pairs = []
    for point in a.points:
        other = b_points.get(point.value)
        if point.result is not None and other is not None and other.result is not None:
            comparison = compare(point.result, other.result, a.slos, labels)
            comparison = Comparison(labels, comparison.rows, (point.verdict, other.verdict))
            pairs.append((point.value, comparison))
    return pairs
