"""Throughput per card against tokens per user: the numbers, the plot, `bench compare`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import matplotlib.image
from click.testing import CliRunner

from toolkit.bench.per_card import Series, plot_per_card, user_bound
from toolkit.bench.results import BenchResult, load_results
from toolkit.bench.verdict import SLO
from toolkit.cli.bench_cmd import command as bench_command

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bench"


def _sweep(cards: int) -> list[BenchResult]:
    runs = load_results(FIXTURES / "sweep_glm5_b200.jsonl")
    return [dataclasses.replace(r, cards=cards) for r in runs]


def test_per_card_and_per_user() -> None:
    result = BenchResult(completed=4, output_throughput=1600.0, median_tpot_ms=40.0, cards=16)
    assert result.output_throughput_per_card == 100.0
    assert result.tokens_per_user == 25.0
    assert result.metric("tokens_per_user") == 25.0
    unknown = dataclasses.replace(result, cards=None, median_tpot_ms=None)
    assert unknown.output_throughput_per_card is None and unknown.tokens_per_user is None


def test_cards_survive_the_result_file(tmp_path: Path) -> None:
    result = BenchResult(completed=1, output_throughput=10.0, cards=48)
    path = tmp_path / "r.jsonl"
    path.write_text(result.to_json() + "\n")
    assert load_results(path)[0].cards == 48


def test_a_tpot_slo_is_a_floor_on_tokens_per_user() -> None:
    assert user_bound(SLO.parse("median_tpot_ms<=50")) == 20.0
    assert user_bound(SLO.parse("tokens_per_user>=30")) == 30.0
    assert user_bound(SLO.parse("median_ttft_ms<=500")) is None


def test_series_points_run_by_tokens_per_user() -> None:
    points = Series("a", tuple(_sweep(8))).points()
    xs = [x for x, _, _ in points]
    assert xs == sorted(xs) and len(points) == 9
    # Highest concurrency is slowest per user and most output per card.
    assert points[0][2].max_concurrency == 1024 and points[-1][2].max_concurrency == 1


def test_plot_one_line_per_run(tmp_path: Path) -> None:
    series = [Series("1P1D (8 cards)", tuple(_sweep(8))), Series("2P1D (12)", tuple(_sweep(12)))]
    png = plot_per_card(series, [SLO.parse("median_tpot_ms<=50")], tmp_path / "p.png", "t")
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width >= 900 and height >= 600


def _write_run(folder: Path, cards: int) -> None:
    folder.mkdir()
    for result in _sweep(cards):
        line = dict(result.raw) | {"cards": cards}
        (folder / f"c{result.max_concurrency}.jsonl").write_text(json.dumps(line) + "\n")


def test_compare_draws_every_run(tmp_path: Path) -> None:
    _write_run(tmp_path / "tp8", 8)
    _write_run(tmp_path / "tp4x3", 12)
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "tp8"), str(tmp_path / "tp4x3"), "--out", str(out)]
    answer = CliRunner().invoke(bench_command, [*args, "--slo", "median_tpot_ms<=50"])
    assert answer.exit_code == 0, answer.output
    assert re.search(r"plot: \S+per-card\.png\s+report: \S+compare\.html", answer.output)
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    assert page.count("<td>tp8 (8 cards)</td>") == 9 and page.count("<td>tp4x3 (12 cards)") == 9
