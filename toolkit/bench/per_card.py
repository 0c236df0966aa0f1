"""Throughput per card against tokens per user: how deployments of different sizes compare.

A 1P1D on 32 cards and a 2P1D on 48 cannot be compared by absolute throughput; what users
weigh is output tokens/s per card (cost) against tokens/s per user (interactivity,
1000 / median TPOT). Each run (a sweep, or a single result) is one line through its points,
from low concurrency (fast for each user, few tokens per card) to high; a TPOT SLO is a
vertical line: points left of it are too slow for a user.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.results import BenchResult, format_number
from toolkit.bench.verdict import SLO

_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037")


@dataclass(frozen=True)
class Series:
    """One run's points, labelled (e.g. "a3-1p1d-64k (16 cards)")."""

    label: str
    results: tuple[BenchResult, ...]

    def points(self) -> list[tuple[float, float, BenchResult]]:
        """(tok/s per user, output tok/s per card, result), by tok/s per user."""
        out = [
            (r.tokens_per_user, r.output_throughput_per_card, r)
            for r in self.results
            if r.tokens_per_user is not None and r.output_throughput_per_card is not None
        ]
        return sorted(((x, y, r) for x, y, r in out), key=lambda p: p[0])  # type: ignore[arg-type]


def user_bound(slo: SLO) -> float | None:
    """The tokens/s-per-user floor an SLO sets: median TPOT ≤ 50 ms → 20 tok/s per user."""
    if slo.metric == "tokens_per_user" and not slo.lower_is_better:
        return slo.bound
    if slo.metric.endswith("_tpot_ms") and slo.lower_is_better and slo.bound > 0:
        return 1000.0 / slo.bound
    return None


def _point_label(result: BenchResult) -> str:
    if result.max_concurrency is not None:
        return f"c={result.max_concurrency}"
    if result.request_rate is not None:
        return f"rate={format_number(result.request_rate)}"
    return ""


def plot_per_card(
    series: Sequence[Series], slos: Sequence[SLO], path: str | Path, title: str = ""
) -> Path:
    """Write the PNG: one line per series, each point labelled with its concurrency."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(9, 6), dpi=120)
    ax = fig.subplots()
    plotted = 0
    for item, color in zip(series, _COLORS * 8, strict=False):
        points = item.points()
        if not points:
            continue
        plotted += 1
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", color=color, linewidth=2, label=item.label)
        for x, y, result in points:
            text = _point_label(result)
            if text:
                ax.annotate(text, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    for slo in slos:
        bound = user_bound(slo)
        if bound is not None:
            ax.axvline(
                bound,
                color="#555555",
                linestyle="--",
                linewidth=1.4,
                label=f"SLO: {slo.describe()} ({format_number(bound)} tok/s per user)",
            )
            ax.axvspan(0, bound, color="#eeeeee", zorder=0)  # too slow for a user
    if not plotted:
        ax.text(0.5, 0.5, "no run with cards and TPOT to plot", ha="center", transform=ax.transAxes)
    ax.set_xlabel("tokens/s per user (1000 / median TPOT)")
    ax.set_ylabel("output tokens/s per card")
    plain = FuncFormatter(lambda v, _pos: format_number(v, 0))
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)
    ax.set_title(title or "throughput per card vs tokens per user", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def series_label(name: str, results: Sequence[BenchResult]) -> str:
    """ "a3-1p1d-64k (32 cards)": the profile the results record (else `name`), its cards."""
    profiles = {str(r.raw["profile"]) for r in results if r.raw.get("profile")}
    name = profiles.pop() if len(profiles) == 1 else name
    cards = {r.cards for r in results if r.cards}
    return f"{name} ({cards.pop()} cards)" if len(cards) == 1 else name


def write_compare_report(
    out_dir: str | Path, series: Sequence[Series], slos: Sequence[SLO], title: str
) -> tuple[Path, Path]:
    """`per-card.png` and `compare.html` (the plot embedded, one table row per point)."""
    out = Path(out_dir)
    png = plot_per_card(series, slos, out / "per-card.png", title)
    esc = html.escape
    rows = []
    for item in series:
        for x, y, result in item.points():
            cells = (
                item.label,
                _point_label(result),
                format_number(result.output_throughput, 0),
                str(result.cards or "-"),
                format_number(y),
                format_number(x),
            )
            rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    heads = ("run", "point", "output tok/s", "cards", "tok/s per card", "tok/s per user")
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    page = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title></head><body style='font-family:sans-serif'>",
        f"<h1>{esc(title)}</h1>",
        f'<img alt="per-card plot" style="max-width:100%" src="data:image/png;base64,{data}">',
        "<table border=1 cellpadding=4>",
        "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>",
        *rows,
        "</table></body></html>",
    ]
    page_path = out / "compare.html"
    page_path.write_text("\n".join(page) + "\n", encoding="utf-8")
    return png, page_path
