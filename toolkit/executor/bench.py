"""`toolkit bench`: the bench client on the bench host, through the run's endpoint.

Before anything runs, one look at the bench host (`bench_host.py`): which client is
installed (SGLang's bench_serving or `vllm bench serve`, see `toolkit.bench.clients`), that
the endpoint answers, that a given `--dataset-path` exists, and whether the Hugging Face
hub is reachable; without it the prompts come from a corpus generated there
(`toolkit.bench.datasets`). Then each point runs the client in a process group of its own
with live output; its result comes back as one JSON line under `results/<run id>/<time>/`,
with the cards the plan uses. Ctrl-C or SIGTERM stops the client on the host within
seconds; a second one abandons that and prints the command that finishes it. In a
rehearsal the bench host gets a tiny tokenizer and an offline dataset (no weights, no
downloads).
"""

from __future__ import annotations

import base64
import json
import math
import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from toolkit import rehearsal, shell
from toolkit.bench.clients import (
    ClientChoice,
    ClientFacts,
    choose_client,
    missing_client_fix,
    sglang_argv,
    vllm_argv,
)
from toolkit.bench.datasets import DatasetChoice, choose_dataset, needs_text
from toolkit.bench.results import BenchResult, parse_results
from toolkit.bench.verdict import SLO, Verdict, evaluate, parse_slos
from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.bench_host import BenchHost, client_wrapper, stop_after_interrupt
from toolkit.executor.bench_play import BenchPlaybook
from toolkit.executor.cluster import Cluster, file_op, host_work
from toolkit.executor.session import Session
from toolkit.host.protocol import Op
from toolkit.plan import Plan
from toolkit.preflight.check_plan import cards_per_node
from toolkit.render.run import Recap
from toolkit.render.scripts import ScriptOptions, process_script, rehearsal_prepare_script
from toolkit.secrets import mask_argv

HEALTH_PATH = "/health"
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:")


@dataclass(frozen=True)
class BenchOptions:
    # flag (without dashes) → value; None removes the flag, True is a bare switch.
    flags: dict[str, Any] = field(default_factory=dict)
    slos: tuple[str, ...] = ()
    results_dir: Path = Path("results")
    accept_new_host_keys: bool = False
    client: str | None = None  # --client; None: the profile's bench.client, else automatic


class BenchFailed(ToolkitError):
    """The client itself failed: no result to judge, so the run is INVALID."""


class BenchInterrupted(ToolkitError):
    """Ctrl-C or SIGTERM during a run; the message says what was stopped or left."""


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
    """Tokens every request must return (bench_serving ignores EOS by default; toolkit
    passes vLLM's client --ignore-eos to match)."""
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


def endpoint_url(flags: list[str], path: str) -> str:
    """Where the client sends requests, from its own flags (`--base-url`, else host/port)."""
    base = flag_value(flags, "base-url")
    if base:
        return base.rstrip("/") + path
    return f"http://{flag_value(flags, 'host') or '127.0.0.1'}:{flag_value(flags, 'port')}{path}"


def plan_cards(plan: Plan) -> int:
    """The accelerator cards the plan's nodes take, summed: ranks, over two on Atlas A3, whose
    cards carry two chips that each take a rank (1P1D on 64 chips is the recipes' 32 cards).
    A CPU node (no accelerator) counts as one, so a CPU run still has a per-node view."""
    if plan.platform == "cpu":
        return len(plan.nodes)
    ranks = sum(cards_per_node(plan, node) for node in plan.nodes)
    a3 = plan.platform == "ascend" and "A3" in str(plan.meta.get("hardware", ""))
    return max(1, math.ceil(ranks / 2)) if a3 else ranks


def shape(flags: list[str]) -> dict[str, Any]:
    """The dataset shape in bench_serving's result keys (vLLM's result has none)."""
    keys = {
        "dataset_name": ("dataset-name", str),
        "random_input_len": ("random-input-len", int),
        "random_output_len": ("random-output-len", int),
        "random_range_ratio": ("random-range-ratio", float),
        "max_concurrency": ("max-concurrency", int),
    }
    out: dict[str, Any] = {}
    for key, (name, kind) in keys.items():
        value = flag_value(flags, name)
        if value is not None:
            out[key] = kind(value)
    return out


class BenchSession:
    """One connection to the bench host, reused for every point of a sweep."""

    def __init__(self, record: state.RunRecord, options: BenchOptions, console: Console) -> None:
        self.record = record
        self.plan: Plan = record.plan_obj
        self.options = options
        self.console = console
        self.recap = Recap(console)
        self.host_name = self.plan.bench.host
        self.work = host_work(self.plan)[self.host_name]
        self.cluster = Cluster({self.host_name: self.work}, console, options.accept_new_host_keys)
        self.run_dir = state.run_dir(self.work.workdir, record.run_id)
        self.prepared: dict[str, Any] = {}
        self.client: ClientChoice | None = None
        self.client_facts = ClientFacts()
        self.dataset: DatasetChoice | None = None
        self.env: dict[str, str] = {}
        self._old_sigterm: Any = None

    def __enter__(self) -> BenchSession:
        if self.record.stopped:
            raise ToolkitError(f"run {self.record.run_id} was stopped; `toolkit up` first")
        if self.cluster.connect(self.recap):
            raise ToolkitError(f"bench host {self.host_name} is unreachable")
        self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        self.host = BenchHost(
            self.session, self.host_name, self.plan.bench.python, f"{self.run_dir}/bench"
        )
        # The bench role's tasks up to `bench_serving` run now; from it on, once per point.
        self.playbook = BenchPlaybook(self)
        self.playbook.before_points()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        self.cluster.close()

    @property
    def session(self) -> Session:
        return self.cluster.sessions[self.host_name]

    # ------------------------------------------------------------------ before the first run

    def preflight(self) -> None:
        """Client, endpoint, dataset: each said in one line, each fatal when wrong."""
        flags = self.flags({})
        path = flag_value(flags, "dataset-path")
        text = needs_text("sglang", flags) or needs_text("vllm", flags)
        spec = {
            "endpoint": endpoint_url(flags, HEALTH_PATH),
            "dataset_path": path,
            "check_hub": text and not path and not self.record.rehearse,
            "timeout": 5,
        }
        facts = self.host.facts(spec)
        self.client_facts = ClientFacts.from_helper(facts)
        self.client = self._choose_client()
        self._say("client", self.client.describe())
        self._check_endpoint(facts.get("endpoint") or {}, spec["endpoint"])
        if path and not (facts.get("dataset_path") or {}).get("exists"):
            raise ToolkitError(
                f"--dataset-path {path}: no such file on the bench host {self.host_name}; "
                "copy the dataset there (a ShareGPT-format JSON file) or leave --dataset-path out"
            )
        hub = facts.get("hub") or {}
        self.dataset = choose_dataset(
            self.client.name, flags, hub.get("reachable"), hub.get("detail", "")
        )
        if hub and not hub.get("reachable"):
            # Nothing in the client should wait on the hub (tokenizer lookups retry for long).
            self.env["HF_HUB_OFFLINE"] = "1"
        if self.dataset.corpus is not None:
            corpus = self.dataset.corpus
            dest = f"{self.run_dir}/bench/{corpus.filename}"
            self.host.corpus(dest, corpus.conversations, corpus.words, corpus.seed)
            self.prepared["dataset-path"] = dest
        self._say("dataset", self.dataset.note)

    def _choose_client(self) -> ClientChoice:
        facts = self.client_facts
        requested_client = self.options.client or self.plan.bench_client
        choice = choose_client(
            self.plan.engine,
            requested_client,
            {name: facts.installed(name) for name in ("sglang", "vllm")},
            {name: facts.version(name) for name in ("sglang", "vllm")},
        )
        if not choice.installed:
            raise ToolkitError(missing_client_fix(choice, self.plan.bench.python, self.host_name))
        return choice

    def _check_endpoint(self, answer: dict[str, Any], url: str) -> None:
        status = answer.get("status")
        what = "the router" if self.plan.router is not None else "the serving node"
        if status is None:
            raise ToolkitError(
                f"{what} does not answer at {url} from the bench host {self.host_name} "
                f"({answer.get('error', 'no connection')}): it is down or unreachable; "
                f"`toolkit status` shows the run's processes, `toolkit logs` their output"
            )
        if status >= 500:
            raise ToolkitError(
                f"{what} answers HTTP {status} at {url}: it is up but not serving; "
                "`toolkit status` shows which node is not ready"
            )
        self._say("endpoint", f"{url} answers (HTTP {status})")

    def _say(self, label: str, text: str) -> None:
        self.console.print(f"[bold]{label}:[/] {text}", highlight=False)

    def prepare_rehearsal(self) -> None:
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
            Op(
                "run",
                {
                    "name": "prepare rehearsal bench",
                    "script": f"{base}/prepare.sh",
                    "log": f"{base}/prepare.log",
                },
            ),
        ]
        results = self.session.agent(ops)
        self.recap.add_agent(self.plan.bench.host, results, quiet_ok=True)
        if any(r.failed for r in results):
            raise ToolkitError(
                f"could not build the rehearsal tokenizer/dataset on {self.plan.bench.host} "
                f"(see {base}/prepare.log); the bench host's Python needs `tokenizers`"
            )
        self.prepared = {"tokenizer": f"{base}/tokenizer", "dataset-path": f"{base}/sharegpt.json"}

    # ------------------------------------------------------------------------------- runs

    def flags(self, extra: dict[str, Any]) -> list[str]:
        """The run's load in bench_serving's flags (the plan's argv after `python -m M`):
        the plan's, then what toolkit prepared (tokenizer, dataset file), then the user's."""
        argv = list(self.plan.bench.argv[3:])
        user = {**self.options.flags, **extra}
        prepared = dict(self.prepared)
        # A prepared ShareGPT file serves only the datasets that read one (the user's
        # --set bench.dataset-name may change the plan's).
        name = user.get("dataset-name", flag_value(argv, "dataset-name"))
        if name not in ("random", "sharegpt", None):
            prepared.pop("dataset-path", None)
        argv = set_flags(argv, prepared)
        argv = set_flags(argv, user)
        return set_flags(argv, {"output-file": None, "output-details": None})

    def argv(self, extra: dict[str, Any], output: str) -> list[str]:
        """The client's full command line for one point (`output`: its result file)."""
        flags = self.flags(extra)
        python = self.plan.bench.python
        if self.client is not None and self.client.name == "vllm":
            folder, _, name = output.rpartition("/")
            return vllm_argv(python, flags, folder or ".", name)
        module = self.client_facts.sglang_module or self.plan.bench.argv[2]
        return sglang_argv(module, python, flags, output)

    def run(self, extra: dict[str, Any], label: str, local_dir: Path) -> BenchRun:
        """One point: the bench role's tasks from `bench_serving` on (see `run_point`)."""
        return self.playbook.point(extra, label, local_dir)

    def run_point(self, extra: dict[str, Any], label: str, local_dir: Path) -> BenchRun:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{self.run_dir}/bench-{stamp}-{label}"
        remote_out = f"{base}.json" if self._vllm else f"{base}.jsonl"
        flags = self.flags(extra)
        argv = self.argv(extra, remote_out)
        env = dict(self.env)
        if self.record.rehearse:
            env |= {"HF_HUB_OFFLINE": "1", "HOME": f"{self.run_dir}/home"}
        tags = (("TOOLKIT_RUN_ID", self.record.run_id), ("TOOLKIT_HOST", self.work.tag))
        options = ScriptOptions(
            include_tuning=False, inline_secrets=True, run_id=self.record.run_id, extra_env=tags
        )
        proc = replace(self.plan.bench, argv=argv, env=env)
        script = process_script(self.plan, "bench", proc, options)
        self.console.print(
            f"[bold]bench {label}[/] on {self.host_name}: "
            + escape(shell.join(mask_argv(argv[1:]))),
            highlight=False,
        )
        last: deque[str] = deque(maxlen=3)
        raised: deque[str] = deque(maxlen=1)  # a traceback's last line says why, when there

        def show(progress: dict[str, Any]) -> None:
            line = progress.get("line", "")
            if line:
                self.console.print("  " + line, markup=False, highlight=False)
                if "Error" in line or "error" in line or "failed" in line:
                    last.append(line.strip()[:300])
                if _EXCEPTION.match(line):
                    raised.append(line.strip()[:300])

        pidfile = f"{base}.pid"
        ops = [
            file_op(
                [
                    (f"{base}.sh", script, "700"),
                    (f"{base}-run.sh", client_wrapper(pidfile, f"{base}.sh"), "700"),
                ]
            ),
            Op("run", {"name": f"bench {label}", "script": f"{base}-run.sh", "log": f"{base}.log"}),
            Op("read_file", {"path": remote_out}),
        ]
        try:
            results = self.session.agent(ops, on_progress=show)
        except KeyboardInterrupt:
            raise self._interrupted(pidfile) from None
        run_result = next(r for r in results if r.task.startswith("run "))
        fetched = next((r for r in results if r.task == "read_file"), None)
        if run_result.status != "ok" or fetched is None or fetched.status != "ok":
            cause = f": {(raised or last)[-1]}" if raised or last else ""
            assert self.client is not None
            raise BenchFailed(
                f"{self.client.command} failed on {self.host_name} ({run_result.msg})"
                f"{cause}; its output is above and in {base}.log"
            )
        text = base64.b64decode(fetched.data["b64"]).decode("utf-8", "replace")
        result = self._result(text, flags, argv, remote_out)
        local_dir.mkdir(parents=True, exist_ok=True)
        local = local_dir / f"{label}.jsonl"
        local.write_text(json.dumps(dict(result.raw)) + "\n", encoding="utf-8")
        verdict = evaluate(result, self.slos(), expected_output_len(flags))
        return BenchRun(result, verdict, local, argv)

    @property
    def _vllm(self) -> bool:
        return self.client is not None and self.client.name == "vllm"

    def _result(self, text: str, flags: list[str], argv: list[str], origin: str) -> BenchResult:
        """The client's last result, with what toolkit knows about the run added."""
        parsed = parse_results(text, requested(flags), origin=f"{self.host_name}:{origin}")
        if not parsed:
            raise BenchFailed(f"{origin} on {self.host_name} holds no result")
        assert self.client is not None and self.dataset is not None
        extra = {
            "profile": self.plan.profile,
            "run_id": self.record.run_id,
            "client": self.client.name,
            "cards": plan_cards(self.plan),
            "dataset_source": self.dataset.note,
            "command": shell.join(mask_argv(argv[1:])),
        }
        if requested(flags) is not None:
            extra["requested"] = requested(flags)
        raw = {**shape(flags), **dict(parsed[-1].raw), **extra}
        return BenchResult.from_dict(raw, requested(flags))

    def _interrupted(self, pidfile: str) -> BenchInterrupted:
        """Stop the client on the host; a second Ctrl-C leaves it and says how to stop it."""
        say = lambda text: self.console.print(text, highlight=False)  # noqa: E731
        kill = self._kill_command(pidfile)
        return BenchInterrupted(stop_after_interrupt(self.host, pidfile, kill, say))

    def _kill_command(self, pidfile: str) -> str:
        kill = f'kill -TERM -- -"$(cat {shell.quote(pidfile)})"'
        conn = self.plan.bench.connection
        if conn.local:
            return kill
        target = f"{conn.user}@{conn.address}" if conn.user else conn.address
        port = ["-p", str(conn.port)] if conn.port != 22 else []
        return shell.join(["ssh", *port, target, kill])

    def slos(self) -> tuple[SLO, ...]:
        return parse_slos(self.options.slos or self.plan.slo)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes Ctrl-C's path: the client on the bench host is stopped, not orphaned."""
    raise KeyboardInterrupt
