"""Benchmark results, verdicts, sweeps and reports: the pure, SSH-free half of `toolkit bench`.

The executor runs a bench client on the bench host (SGLang's bench_serving or `vllm bench
serve`) and fetches its result file; the choices before and everything after live here and
are tested without a cluster:

- `clients`: which client runs, its command line (bench_serving's flags translated for vLLM);
- `datasets`: where the prompts come from (a given file, the hub, or a generated corpus);
- `toolkit/host/bench_helper.py`: the stdlib-only program the bench host runs (facts,
  corpus, stop);
- `results`: parse F (bare `Infinity`, NaN, a half-written last line) into `BenchResult`s;
- `verdict`: the validity gate (lost requests, no tokens, short outputs, errors), then SLOs;
- `sweep`: "max_concurrency=1,8,16" specs, one verdict per point, the saturation point;
- `report`: the sweep PNG, Markdown/HTML reports and run-to-run comparisons;
- `per_card`: output tok/s per card against tok/s per user, one line per run.
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
