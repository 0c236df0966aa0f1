"""`toolkit bench`: benchmark the current run; sweeps, verdicts, reports, comparisons."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console

from toolkit.bench.per_card import Series, series_label, write_compare_report
from toolkit.bench.report import compare, write_report
from toolkit.bench.results import BenchResult, load_results
from toolkit.bench.sweep import SweepSpec, build_sweep
from toolkit.bench.verdict import Status, parse_slos
from toolkit.cli.run_options import host_key_option, run_option
from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.bench import (
    BenchFailed,
    BenchInterrupted,
    BenchOptions,
    BenchSession,
    expected_output_len,
)
from toolkit.profiles import parse_override
from toolkit.render.bench import render_comparison, render_result, render_sweep, render_verdict


def _flags(
    max_concurrency: int | None,
    num_prompts: int | None,
    request_rate: str | None,
    dataset_path: str | None,
    tokenizer: str | None,
    sets: tuple[str, ...],
) -> dict[str, object]:
    flags: dict[str, object] = {}
    for name, value in (
        ("max-concurrency", max_concurrency),
        ("num-prompts", num_prompts),
        ("request-rate", request_rate),
        ("dataset-path", dataset_path),
        ("tokenizer", tokenizer),
    ):
        if value is not None:
            flags[name] = value
    for item in sets:
        parts, value = parse_override(item)
        if len(parts) != 2 or parts[0] != "bench":
            raise ToolkitError(f"--set {item}: bench takes bench.FLAG=VALUE, e.g. bench.seed=7")
        flags[parts[1]] = value
    return flags


@click.group("bench", invoke_without_command=True)
@run_option
@click.option("--max-concurrency", type=int, help="bench_serving --max-concurrency.")
@click.option("--num-prompts", type=int, help="bench_serving --num-prompts.")
@click.option("--request-rate", help="bench_serving --request-rate (a number or inf).")
@click.option("--dataset-path", help="Offline ShareGPT-format file (on the bench host).")
@click.option("--tokenizer", help="Tokenizer path on the bench host (default: model path).")
@click.option("--set", "sets", multiple=True, metavar="bench.FLAG=VALUE", help="Any flag.")
@click.option(
    "--client",
    type=click.Choice(["sglang", "vllm"]),
    help="Bench client: SGLang's bench_serving or `vllm bench serve` (default: the profile's "
    "bench.client, else the engine's own client where installed on the bench host).",
)
@click.option("--sweep", help="e.g. max_concurrency=1,8,16,32 (or request_rate=...).")
@click.option(
    "--slo", "slos", multiple=True, help="Override the profile's SLO, e.g. median_tpot_ms<=50."
)
@click.option(
    "--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True
)
@host_key_option
@click.pass_context
def command(
    ctx: click.Context,
    run_id: str | None,
    max_concurrency: int | None,
    num_prompts: int | None,
    request_rate: str | None,
    dataset_path: str | None,
    tokenizer: str | None,
    sets: tuple[str, ...],
    client: str | None,
    sweep: str | None,
    slos: tuple[str, ...],
    results_dir: Path,
    accept_new_host_keys: bool,
) -> None:
    """Run the profile's benchmark through the run's endpoint and judge it."""
    if ctx.invoked_subcommand is not None:
        return
    console = Console()
    record = state.load(run_id)
    options = BenchOptions(
        flags=_flags(max_concurrency, num_prompts, request_rate, dataset_path, tokenizer, sets),
        slos=slos,
        results_dir=results_dir,
        accept_new_host_keys=accept_new_host_keys,
        client=client,
    )
    try:
        _bench(record, options, console, sweep, results_dir)
    except BenchInterrupted as exc:
        console.print(f"[yellow]{exc}[/]", highlight=False)
        sys.exit(130)


def _bench(
    record: state.RunRecord,
    options: BenchOptions,
    console: Console,
    sweep: str | None,
    results_dir: Path,
) -> None:
    out = results_dir / record.run_id / time.strftime("%Y%m%d-%H%M%S")
    with BenchSession(record, options, console) as bench:
        if sweep is None:
            try:
                run = bench.run({}, "bench", out)
            except BenchFailed as exc:
                console.print(f"[bold yellow]INVALID[/]  {exc}", highlight=False)
                sys.exit(1)
            render_result(run.result, console)
            render_verdict(run.verdict, console)
            console.print(f"result: {run.path}")
            sys.exit(0 if run.verdict.status == Status.PASS else 1)
        spec = SweepSpec.parse(sweep)
        results = {}
        for value in spec.values:
            flag = spec.flag.removeprefix("--")
            try:
                run = bench.run({flag: _number(value)}, spec.label(value).replace("=", ""), out)
            except BenchFailed as exc:
                console.print(f"[bold yellow]INVALID[/]  {spec.label(value)}: {exc}")
                continue
            render_verdict(run.verdict, console, label=spec.label(value))
            results[value] = run.result
        expected = expected_output_len(bench.flags({}))
        built = build_sweep(spec, results, bench.slos(), expected)
    render_sweep(built, console)
    files = write_report(out, built, record.plan["profile"], record.run_id)
    plots = "  ".join(str(p) for p in (files.png, files.per_card) if p is not None)
    console.print(f"report: {files.markdown}  {files.html}  plot: {plots}")
    sys.exit(0 if built.saturation is not None else 1)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


@command.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--slo", "slos", multiple=True, help="SLO to judge by, e.g. median_tpot_ms<=50.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where the per-card plot and HTML go (default: results/compare-<time>).",
)
def compare_command(runs: tuple[Path, ...], slos: tuple[str, ...], out: Path | None) -> None:
    """Runs (JSONL files or result directories, e.g. two sweeps) compared: A vs B with
    deltas (last result of each), and every run as one line of output tok/s per card
    against tok/s per user (PNG and HTML)."""
    if len(runs) < 2:
        raise ToolkitError("bench compare takes at least two runs (files or directories)")
    console = Console()
    parsed_slos = parse_slos(slos)
    a, b = runs[0], runs[1]
    comparison = compare(_last_result(a), _last_result(b), parsed_slos, labels=(a.name, b.name))
    render_comparison(comparison, console)
    series = []
    for path in runs:
        results = _all_results(path)
        series.append(Series(series_label(path.name, results), tuple(results)))
    folder = out or Path("results") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    title = "output tokens/s per card vs tokens/s per user"
    png, page = write_compare_report(folder, series, parsed_slos, title)
    console.print(f"plot: {png}  report: {page}", soft_wrap=True, highlight=False)


def _result_files(path: Path) -> list[Path]:
    """A directory's result files in the order they were written (a sweep's last point last)."""
    files = [path]
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"), key=lambda f: (f.stat().st_mtime, f.name))
    if not files:
        raise ToolkitError(f"{path}: no .jsonl result inside")
    return files


def _last_result(path: Path) -> BenchResult:
    files = _result_files(path)
    results = load_results(files[-1])
    if not results:
        raise ToolkitError(f"{files[-1]}: no result line")
    return results[-1]


def _all_results(path: Path) -> list[BenchResult]:
    """Every result of a run: each point of a sweep directory, or each line of a file."""
    return [result for file in _result_files(path) for result in load_results(file)]
