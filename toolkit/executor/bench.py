"""`toolkit bench`: the real bench_serving on the bench host, through the run's endpoint.

The planned command gets the user's overrides, an `--output-file` in the run directory and
`--output-details` (per-request output lengths feed the validity gate). Output streams
live; the JSONL comes back under `results/<run id>/<time>/`. In a rehearsal the bench host
gets a tiny tokenizer and an offline ShareGPT-format dataset (no weights, no downloads).
"""

from __future__ import annotations

import base64
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from toolkit import rehearsal
from toolkit.bench.results import BenchResult, load_results
from toolkit.bench.verdict import SLO, Verdict, evaluate, parse_slos
from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.cluster import Cluster, file_op, host_work
from toolkit.executor.session import Session
from toolkit.plan import Plan
from toolkit.render.run import Recap
from toolkit.render.scripts import ScriptOptions, process_script, rehearsal_prepare_script
from toolkit.secrets import mask_argv


@dataclass(frozen=True)
class BenchOptions:
    # flag (without dashes) → value; None removes the flag, True is a bare switch.
    flags: dict[str, Any] = field(default_factory=dict)
    slos: tuple[str, ...] = ()
    results_dir: Path = Path("results")
    accept_new_host_keys: bool = False


class BenchFailed(ToolkitError):
    """bench_serving itself failed: no result to judge, so the run is INVALID."""


@dataclass(frozen=True)
class BenchRun:
    result: BenchResult
    verdict: Verdict
    path: Path
    argv: list[str]


def set_flags(argv: list[str], flags: dict[str, Any]) -> list[str]:
    """Replace, add or drop `--flag value...` entries of an argv."""
    out = list(argv)
    for name, value in flags.items():
        flag = f"--{name}"
        if flag in out:
            i = out.index(flag)
            j = i + 1
            while j < len(out) and not out[j].startswith("--"):
                j += 1
            del out[i:j]
        if value is None or value is False:
            continue
        out.append(flag)
        if value is not True:
            out += [str(v) for v in (value if isinstance(value, list) else [value])]
    return out


def flag_value(argv: list[str], name: str) -> str | None:
    flag = f"--{name}"
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def expected_output_len(argv: list[str]) -> int | None:
    """Tokens every request must return (bench_serving ignores EOS by default)."""
    if "--disable-ignore-eos" in argv:
        return None
    dataset = flag_value(argv, "dataset-name") or "sharegpt"
    if (
        dataset in ("random", "random-ids")
        and float(flag_value(argv, "random-range-ratio") or 0) == 1
    ):
        return int(flag_value(argv, "random-output-len") or 1024)
    if (
        dataset == "generated-shared-prefix"
        and float(flag_value(argv, "gsp-range-ratio") or 1) == 1
    ):
        return int(flag_value(argv, "gsp-output-len") or 256)
    return None


def requested(argv: list[str]) -> int | None:
    value = flag_value(argv, "num-prompts")
    return int(value) if value else None


class BenchSession:
    """One connection to the bench host, reused for every point of a sweep."""

    def __init__(self, record: state.RunRecord, options: BenchOptions, console: Console) -> None:
        self.record = record
        self.plan: Plan = record.plan_obj
        self.options = options
        self.console = console
        self.recap = Recap(console)
        host = self.plan.bench.host
        self.work = host_work(self.plan)[host]
        self.cluster = Cluster({host: self.work}, console, options.accept_new_host_keys)
        self.run_dir = state.run_dir(self.work.workdir, record.run_id)
        self.prepared: dict[str, Any] = {}

    def __enter__(self) -> BenchSession:
        if self.record.stopped:
            raise ToolkitError(f"run {self.record.run_id} was stopped; `toolkit up` first")
        if self.cluster.connect(self.recap):
            raise ToolkitError(f"bench host {self.plan.bench.host} is unreachable")
        if self.record.rehearse:
            self._prepare_rehearsal()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.close()

    @property
    def session(self) -> Session:
        return self.cluster.sessions[self.plan.bench.host]

    def _prepare_rehearsal(self) -> None:
        """Upload and run the tokenizer and dataset builders with the bench host's Python.

        The helpers import only each other (and `tokenizers`): the host has no toolkit."""
        base = f"{self.run_dir}/rehearsal-bench"
        files = [
            (f"{base}/{name}", (rehearsal.DIRECTORY / name).read_text(), "644")
            for name in rehearsal.BENCH_HELPERS
        ]
        script = rehearsal_prepare_script(self.work.python, base)
        files.append((f"{base}/prepare.sh", script, "700"))
        ops = [
            file_op(files),
            {
                "op": "run",
                "name": "prepare rehearsal bench",
                "script": f"{base}/prepare.sh",
                "log": f"{base}/prepare.log",
            },
        ]
        results = self.session.agent(ops)
        self.recap.add_agent(self.plan.bench.host, results, quiet_ok=True)
        if any(r["status"] == "failed" for r in results):
            raise ToolkitError(
                f"could not build the rehearsal tokenizer/dataset on {self.plan.bench.host} "
                f"(see {base}/prepare.log); the bench host's Python needs `tokenizers`"
            )
        self.prepared = {"tokenizer": f"{base}/tokenizer", "dataset-path": f"{base}/sharegpt.json"}

    def argv(self, flags: dict[str, Any], output: str) -> list[str]:
        argv = list(self.plan.bench.argv)
        if self.record.rehearse:
            rehearsal = {"tokenizer": self.prepared["tokenizer"]}
            if flag_value(argv, "dataset-name") in ("random", "sharegpt", None):
                rehearsal["dataset-path"] = self.prepared["dataset-path"]
            argv = set_flags(argv, rehearsal)
        argv = set_flags(argv, {**self.options.flags, **flags})
        return set_flags(argv, {"output-file": output, "output-details": True})

    def run(self, flags: dict[str, Any], label: str, local_dir: Path) -> BenchRun:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        remote_out = f"{self.run_dir}/bench-{stamp}-{label}.jsonl"
        argv = self.argv(flags, remote_out)
        env = (
            {"HF_HUB_OFFLINE": "1", "HOME": f"{self.run_dir}/home"} if self.record.rehearse else {}
        )
        proc = replace(self.plan.bench, argv=argv, env=env)
        script = process_script(
            self.plan,
            "bench",
            proc,
            ScriptOptions(include_tuning=False, inline_secrets=True, run_id=self.record.run_id),
        )
        path = f"{self.run_dir}/bench-{stamp}-{label}.sh"
        log = f"{self.run_dir}/bench-{stamp}-{label}.log"
        self.console.print(
            f"[bold]bench {label}[/] on {self.plan.bench.host}: "
            + escape(" ".join(mask_argv(argv[1:]))),
            highlight=False,
            markup=True,
        )

        last: deque[str] = deque(maxlen=3)

        def show(progress: dict[str, Any]) -> None:
            line = progress.get("line", "")
            if line:
                self.console.print("  " + line, markup=False, highlight=False)
                if "Error" in line or "error" in line or "failed" in line:
                    last.append(line.strip()[:300])

        results = self.session.agent(
            [
                file_op([(path, script, "700")]),
                {"op": "run", "name": f"bench {label}", "script": path, "log": log},
                {"op": "read_file", "path": remote_out},
            ],
            on_progress=show,
        )
        run_result = next(r for r in results if r["task"].startswith("run "))
        fetched = next((r for r in results if r["task"] == "read_file"), None)
        if run_result["status"] != "ok" or fetched is None or fetched["status"] != "ok":
            cause = f": {last[-1]}" if last else ""
            raise BenchFailed(
                f"bench_serving failed on {self.plan.bench.host} ({run_result['msg']}){cause}; "
                f"its output is above and in {log}"
            )
        local_dir.mkdir(parents=True, exist_ok=True)
        local = local_dir / f"{label}.jsonl"
        local.write_bytes(base64.b64decode(fetched["b64"]))
        parsed = load_results(local, requested=requested(argv))
        if not parsed:
            raise ToolkitError(f"{local}: bench_serving wrote no result")
        result = parsed[-1]
        verdict = evaluate(result, self.slos(), expected_output_len(argv))
        return BenchRun(result, verdict, local, argv)

    def slos(self) -> tuple[SLO, ...]:
        return parse_slos(self.options.slos or self.plan.slo)
