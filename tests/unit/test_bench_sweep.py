"""Sweep specs, per-point verdicts, the saturation point, the plot, reports and renderers.

The sweep fixture is seed 002's GLM-5 B200 table (2048 in / 512 out); with median TPOT ≤ 50
ms, c=1…64 pass, c=128…512 fail on TPOT, and c=1024 lost 3 of 4096 requests (INVALID).
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
import struct
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.image
import pytest
from rich.console import Console

from toolkit.bench.report import compare, compare_sweeps, plot_sweep, write_report
from toolkit.bench.results import BenchError, BenchResult, load_results
from toolkit.bench.sweep import Sweep, SweepSpec, build_sweep
from toolkit.bench.verdict import Status, evaluate, parse_slos
from toolkit.render.bench import render_comparison, render_result, render_sweep, render_verdict

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bench"
SPEC = "max_concurrency=1,8,16,32,64,128,256,512,1024"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results() -> list[BenchResult]:
    """The sweep runs, with num_prompts = max(16, 4 × concurrency) as the generator used, on
    the seed's 8 GPUs."""
    runs = load_results(FIXTURES / "sweep_glm5_b200.jsonl")
    runs = [dataclasses.replace(r, cards=8) for r in runs]
    return [r.with_requested(max(16, 4 * (r.max_concurrency or 0))) for r in runs]


def _sweep(slo: str | None = "median_tpot_ms<=50", spec: str = SPEC) -> Sweep:
    slos = parse_slos([slo] if slo else [])
    return build_sweep(SweepSpec.parse(spec), _results(), slos)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("text", "variable", "values"),
    [
        ("max_concurrency=1,8,16", "max_concurrency", (1, 8, 16)),
        ("concurrency = 1, 2 ,4", "max_concurrency", (1, 2, 4)),
        ("--max-concurrency=64", "max_concurrency", (64,)),
        ("request_rate=0.5,2,inf", "request_rate", (0.5, 2.0, math.inf)),
    ],
)
def test_sweep_spec_parse(text: str, variable: str, values: tuple[float, ...]) -> None:
    spec = SweepSpec.parse(text)
    assert (spec.variable, spec.values) == (variable, values)


def test_sweep_spec_str_flag_and_labels() -> None:
    spec = SweepSpec.parse("max_concurrency=1,8,1024")
    assert str(spec) == "max_concurrency=1,8,1024"
    assert spec.flag == "--max-concurrency"
    assert spec.label(1024) == "c=1024"
    rate = SweepSpec.parse("rate=0.5,inf")
    assert (str(rate), rate.flag, rate.label(math.inf)) == (
        "request_rate=0.5,inf",
        "--request-rate",
        "rate=inf",
    )


SPEC_ERRORS = [
    ("max_conc=1,2", "NAME one of max_concurrency, request_rate"),
    ("max_concurrency", "write NAME=V1,V2"),
    ("max_concurrency=", "no values given"),
    ("max_concurrency=1,x", "'x' is not a whole number"),
    ("max_concurrency=1.5", "'1.5' is not a whole number"),
    ("max_concurrency=0,8", "values must be positive, got '0'"),
    ("max_concurrency=8,16,8", "8 given more than once"),
    ("request_rate=-1", "values must be positive"),
    ("request_rate=fast", "'fast' is not a number or inf"),
]
assert SPEC_ERRORS


@pytest.mark.parametrize(("text", "message"), SPEC_ERRORS)
def test_sweep_spec_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        SweepSpec.parse(text)


def test_sweep_verdicts_and_saturation_point() -> None:
    sweep = _sweep()
    assert [p.verdict.status for p in sweep.points] == [Status.PASS] * 5 + [Status.FAIL] * 3 + [
        Status.INVALID
    ]
    best = sweep.saturation
    assert best is not None and best.value == 64
    assert best.result is not None
    assert best.result.output_throughput == pytest.approx(1456)
    assert sweep.saturation_text() == (
        "Saturation point: c=64 (1,456 tok/s), the highest output throughput among runs "
        "that meet median TPOT ≤ 50 ms."
    )
    assert sweep.points[-1].verdict.reasons == (
        "only 4,093 of 4,096 requests completed (3 failed)",
    )


def test_sweep_rows_match_seed_002() -> None:
    rows = {row.value: row for row in _sweep().rows()}
    row = rows[128]
    assert row.completed == "512/512"
    assert row.output_throughput == pytest.approx(2132)
    assert (row.median_ttft_ms, row.median_tpot_ms, row.p99_itl_ms) == (3558, 52.93, 569.76)
    assert row.status is Status.FAIL
    assert row.reason == "median TPOT: 2.9 ms (5.9%) over"
    assert rows[1024].reason == "only 4,093 of 4,096 requests completed (3 failed)"


def test_no_point_passes_means_no_saturation_point() -> None:
    sweep = _sweep("median_tpot_ms<=10")
    assert sweep.saturation is None
    assert {p.verdict.status for p in sweep.points} == {Status.FAIL, Status.INVALID}
    assert sweep.saturation_text() == (
        "No saturation point: no point passes the SLO (median TPOT ≤ 10 ms)."
    )


def test_without_slo_saturation_is_the_best_valid_point() -> None:
    sweep = _sweep(None)
    assert sweep.saturation is not None and sweep.saturation.value == 128
    assert "among valid runs (no SLO given)" in sweep.saturation_text()


def test_missing_point_is_invalid_and_reruns_replace_earlier_runs() -> None:
    results = _results()
    rerun = dataclasses.replace(results[4], output_throughput=1500.0, median_tpot_ms=45.0)
    sweep = build_sweep(
        SweepSpec.parse("max_concurrency=32,64,2048"),
        [*results, rerun],
        parse_slos(["median_tpot_ms<=50"]),
    )
    point_64, point_2048 = sweep.points[1], sweep.points[2]
    assert point_64.result is rerun
    assert point_2048.result is None
    assert point_2048.verdict.status is Status.INVALID
    assert point_2048.verdict.reasons == ("no run recorded for c=2048",)
    assert sweep.saturation is point_64


def test_mapping_input_and_ignore_eos() -> None:
    short = next(
        r for r in load_results(FIXTURES / "invalid_runs.jsonl", 8) if r.tag == "short-outputs"
    )
    spec = SweepSpec.parse("max_concurrency=8")
    assert build_sweep(spec, {8: short}).points[0].verdict.status is Status.INVALID
    assert build_sweep(spec, {8: short}, ignore_eos=False).points[0].verdict.status is Status.PASS


def test_plot_is_a_png_of_reasonable_size(tmp_path: Path) -> None:
    path = plot_sweep(_sweep(), tmp_path / "out" / "sweep.png", profile="glm5-b200")
    assert _png_size(path) == (1080, 960)
    assert 30_000 < path.stat().st_size < 1_000_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (960, 1080)
    assert pixels.std() > 0.05  # not a blank canvas


def test_plot_without_passing_point_or_finite_values(tmp_path: Path) -> None:
    assert _png_size(plot_sweep(_sweep("median_tpot_ms<=10"), tmp_path / "a.png")) == (1080, 960)
    rate = build_sweep(SweepSpec.parse("request_rate=inf"), _results()[-1:])
    assert _png_size(plot_sweep(rate, tmp_path / "b.png")) == (1080, 960)


def test_report_markdown_and_html(tmp_path: Path) -> None:
    date = datetime(2026, 8, 21, 10, 15, tzinfo=timezone.utc)
    files = write_report(
        tmp_path, _sweep(), "glm5-b200", "run-42", date, meta={"Hosts": "b200-a | b200-b"}
    )
    assert files.png is not None and files.png.name == "sweep.png"
    md = files.markdown.read_text()
    assert md.startswith("# Benchmark report: glm5-b200\n")
    for line in (
        "| Run id | run-42 |",
        "| Date | 2026-08-21T10:15:00+00:00 |",
        "| SLO | median TPOT ≤ 50 ms |",
        "| Dataset | random, 2048 in / 512 out, range ratio 1.0 |",
        "| Hosts | b200-a \\| b200-b |",
        "| 128 | 512/512 | 2,132 | 266.5 | 18.9 | 3,558 | 52.93 | 569.76 | FAIL |",
        "| 1024 | 4,093/4,096 | 1,944 | 243 | 7 | 175,241 | 143.10 | 584.03 | INVALID |",
        "![max_concurrency sweep](sweep.png)",
        "![output tokens/s per card against tokens/s per user](per-card.png)",
        "**Saturation point: c=64 (1,456 tok/s), the highest output throughput among runs that "
        "meet median TPOT ≤ 50 ms.**",
        "  - median TPOT 39.9 ms ≤ 50 ms: PASS, 10.1 ms (20.1%) headroom",
    ):
        assert line in md.splitlines(), line
    page = files.html.read_text()
    encoded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert files.per_card is not None
    pngs = [files.png.read_bytes(), files.per_card.read_bytes()]
    assert [base64.b64decode(data) for data in encoded] == pngs
    assert re.findall(r'src="(?!data:)', page) == []
    assert '<td class="n">2,132</td>' in page
    assert "only 4,093 of 4,096 requests completed (3 failed)" in page


def test_report_without_plot(tmp_path: Path) -> None:
    files = write_report(tmp_path, _sweep(), "p", "r", datetime(2026, 1, 1), plot=False)
    assert files.png is None and not (tmp_path / "sweep.png").exists()
    assert "![" not in files.markdown.read_text()
    assert "data:image/png" not in files.html.read_text()


def test_compare_sweeps_pairs_shared_values() -> None:
    before = _sweep()
    faster = [
        dataclasses.replace(r, output_throughput=(r.output_throughput or 0) * 1.1)
        for r in _results()
    ]
    after = build_sweep(SweepSpec.parse("max_concurrency=64,128,4096"), faster, before.slos)
    pairs = compare_sweeps(before, after, ("before", "after"))
    assert [value for value, _ in pairs] == [64, 128]
    rows = {r.metric: r for r in pairs[0][1].rows}
    assert rows["output_throughput"].delta_pct == pytest.approx(10.0)
    assert [v.status for v in pairs[1][1].verdicts] == [Status.FAIL, Status.FAIL]


def _console() -> Console:
    return Console(record=True, width=160, force_terminal=True, color_system="standard")


def test_render_sweep_and_result() -> None:
    console = _console()
    render_sweep(_sweep(), console)
    [single] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    render_result(single, console)
    text = console.export_text()
    row = r"│\s+64 \*\s+│\s+256/256\s+│\s+1,456\s+│\s+182\s+│\s+25\s+│\s+2,031\s+│\s+39\.94\s+│"
    assert re.search(row, text)
    assert "Saturation point: c=64 (1,456 tok/s)" in text
    assert re.search(r"completed / requested\s+64 / 64", text)
    assert re.search(r"accept length\s+2\.31", text)
    assert re.search(r"TPOT\s+│\s+43\.26\s+│\s+41\.20\s+│\s+82\.40", text)


def test_render_verdict_colours() -> None:
    [single] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    lost = next(
        r for r in load_results(FIXTURES / "invalid_runs.jsonl", 64) if r.tag == "lost-requests"
    )
    slos = parse_slos(["median_tpot_ms<=50"])
    cases = [
        (evaluate(single, slos), "\x1b[1;32mPASS"),
        (evaluate(single, parse_slos(["median_tpot_ms<=40"])), "\x1b[1;31mFAIL"),
        (evaluate(lost, slos), "\x1b[1;33mINVALID"),
    ]
    for verdict, ansi in cases:
        console = _console()
        render_verdict(verdict, console)
        assert ansi in console.export_text(styles=True)
    console = _console()
    render_verdict(cases[2][0], console, "c=16")
    assert "c=16: INVALID  only 60 of 64 requests completed (4 failed)" in console.export_text()


def test_render_comparison() -> None:
    [a] = load_results(FIXTURES / "sglang_single.jsonl", requested=64)
    b = dataclasses.replace(a, median_tpot_ms=36.05)
    console = _console()
    render_comparison(compare(a, b, parse_slos(["median_tpot_ms<=40"]), ("base", "tuned")), console)
    text = console.export_text()
    assert re.search(
        r"median TPOT \(ms\)\s+│\s+41\.2\s+│\s+36\.05\s+│\s+-5\.15\s+│\s+-12\.5%", text
    )
    assert "base: FAIL" in text and "tuned: PASS" in text
