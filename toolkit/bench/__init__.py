"""Benchmark results, verdicts, sweeps and reports: the pure, SSH-free half of `toolkit bench`.

The executor runs `python -m sglang.bench_serving --output-file F` on the bench host and
fetches F; everything after that lives here and is tested without a cluster:

- `results`: parse F (bare `Infinity`, NaN, a half-written last line) into `BenchResult`s;
- `verdict`: the validity gate (lost requests, no tokens, short outputs, errors), then SLOs;
- `sweep`: "max_concurrency=1,8,16" specs, one verdict per point, the saturation point;
- `report`: the sweep PNG, Markdown/HTML reports and run-to-run comparisons.
"""

from toolkit.bench.results import BenchError, BenchResult, load_results, parse_results
from toolkit.bench.sweep import Sweep, SweepPoint, SweepSpec, build_sweep, saturation_point
from toolkit.bench.verdict import SLO, SLOCheck, Status, Verdict, evaluate, parse_slos

__all__ = [
    "SLO",
    "BenchError",
    "BenchResult",
    "SLOCheck",
    "Status",
    "Sweep",
    "SweepPoint",
    "SweepSpec",
    "Verdict",
    "build_sweep",
    "evaluate",
    "load_results",
    "parse_results",
    "parse_slos",
    "saturation_point",
]
