"""Which benchmark client runs on the bench host, and the command line it gets.

Two clients measure the same thing (TTFT, TPOT, ITL, throughput over random/sharegpt
prompts): SGLang's `python -m sglang.benchmark.serving` (`sglang.bench_serving` before
0.5.23) and vLLM's `vllm bench serve`. A vLLM host has no sglang, and an SGLang host no
vllm, so the client follows the engine: `bench.client` in the profile or `--client` picks
one; otherwise the engine's own client runs where it is installed on the bench host, else
the other one, and the output says so.

Profiles write the load in bench_serving's flags (the plan's bench argv); `vllm_argv`
translates them. Pure: the bench host's facts come in as data (`ClientFacts`).

Worked example: `--dataset-name random --random-input-len 1024 --random-output-len 512
--random-range-ratio 1` (bench_serving: every length exactly 1024/512) becomes `--dataset-name
random --random-input-len 1024 --random-output-len 512 --random-range-ratio 0 --ignore-eos`
(vLLM draws lengths in [L(1-r), L(1+r)] and stops at EOS unless told not to).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ToolkitError

CLIENTS = ("sglang", "vllm")
SGLANG_MODULES = ("sglang.benchmark.serving", "sglang.bench_serving")
VLLM_MODULE = "vllm.entrypoints.cli.main"
# bench_serving flags that have no meaning for `vllm bench serve` (dropped, with a note).
_VLLM_DROPPED = frozenset({"pd-separated", "flush-cache", "output-file", "output-details"})
_VLLM_RENAMED = {"warmup-requests": "num-warmups", "tag": "label"}


@dataclass(frozen=True)
class ClientFacts:
    """What the bench host's helper found: per client, installed or not, and how to run it."""

    sglang_module: str | None = None
    sglang_version: str | None = None
    vllm_installed: bool = False
    vllm_version: str | None = None

    @classmethod
    def from_helper(cls, data: Mapping[str, Any]) -> ClientFacts:
        sglang, vllm = data.get("sglang") or {}, data.get("vllm") or {}
        return cls(
            sglang_module=sglang.get("module") if sglang.get("installed") else None,
            sglang_version=sglang.get("version"),
            vllm_installed=bool(vllm.get("installed")),
            vllm_version=vllm.get("version"),
        )

    def installed(self, client: str) -> bool:
        return self.sglang_module is not None if client == "sglang" else self.vllm_installed

    def version(self, client: str) -> str | None:
        return self.sglang_version if client == "sglang" else self.vllm_version


@dataclass(frozen=True)
class ClientChoice:
    """The client that will run, whether it is there, and why it was picked."""

    name: str
    installed: bool
    reason: str
    version: str | None = None

    @property
    def command(self) -> str:
        return "vllm bench serve" if self.name == "vllm" else "sglang bench_serving"

    def describe(self) -> str:
        """ "vllm bench serve (vllm 0.32.0): the engine's own client" """
        where = f"{self.name} {self.version}" if self.version else f"{self.name} not installed"
        return f"{self.command} ({where}): {self.reason}"


def check_client(name: str | None, where: str) -> str | None:
    """Validate a `bench.client` / `--client` value."""
    if name is None or name in CLIENTS:
        return name
    raise ToolkitError(f"{where}: bench client {name!r} is not one of {', '.join(CLIENTS)}")


def choose_client(
    engine: str, requested: str | None, installed: Mapping[str, bool], versions: Mapping = {}
) -> ClientChoice:
    """The client for a run of `engine`.

    >>> choose_client("vllm", None, {"sglang": True, "vllm": False}).reason
    'vllm is not installed on the bench host, so sglang bench_serving runs instead'
    """
    if requested is not None:
        name = requested
        reason = "asked for (--client or bench.client)"
    else:
        own = engine if engine in CLIENTS else "sglang"
        other = next(c for c in CLIENTS if c != own)
        if installed.get(own) or not installed.get(other):
            name, reason = own, "the engine's own client"
        else:
            name = other
            reason = (
                f"{own} is not installed on the bench host, so "
                f"{ClientChoice(other, True, '').command} runs instead"
            )
    return ClientChoice(name, bool(installed.get(name)), reason, versions.get(name))


def missing_client_fix(choice: ClientChoice, python: str, host: str) -> str:
    other = next(c for c in CLIENTS if c != choice.name)
    return (
        f"no {choice.command} on {host}: `pip install {choice.name}` for {python} there, set "
        f"the bench host's python to an interpreter that has it, or use --client {other}"
    )


def split_flags(argv: list[str]) -> list[tuple[str, list[str]]]:
    """`--a 1 --b --c x y` -> [("a", ["1"]), ("b", []), ("c", ["x", "y"])]."""
    items: list[tuple[str, list[str]]] = []
    for token in argv:
        if token.startswith("--"):
            name, eq, inline = token[2:].partition("=")
            items.append((name, [inline] if eq else []))
        elif items:
            items[-1][1].append(token)
        else:
            raise ToolkitError(f"bench command: {token!r} comes before any --flag")
    return items


def _value(items: list[tuple[str, list[str]]], name: str) -> str | None:
    found = [values for flag, values in items if flag == name]
    return found[-1][0] if found and found[-1] else None


def sglang_argv(module: str, python: str, flags: list[str], output: str) -> list[str]:
    """bench_serving as planned, with its result file and per-request details."""
    return [python, "-m", module, *flags, "--output-file", output, "--output-details"]


def vllm_argv(python: str, flags: list[str], result_dir: str, result_file: str) -> list[str]:
    """`vllm bench serve` with bench_serving's flags translated (see the module docstring)."""
    items = split_flags(flags)
    names = {name for name, _ in items}
    out: list[str] = [python, "-m", VLLM_MODULE, "bench", "serve"]
    ratio = _value(items, "random-range-ratio")
    for name, values in items:
        if name in _VLLM_DROPPED or name == "disable-ignore-eos":
            continue
        if name == "backend":
            values = [_vllm_backend(values[0] if values else "sglang")]
        elif name == "dataset-name" and values and values[0] == "random-ids":
            values = ["random"]  # vLLM's random dataset is random token ids already
        elif name in ("random-input-len", "random-output-len") and ratio is not None and values:
            values = [str(_centre(int(values[0]), float(ratio)))]
        elif name == "random-range-ratio" and values:
            values = [_format(_vllm_ratio(float(values[0])))]
        out += [f"--{_VLLM_RENAMED.get(name, name)}", *values]
    if _value(items, "backend") in ("sglang-oai-chat", "vllm-chat"):
        out += ["--endpoint", "/v1/chat/completions"]
    if "disable-ignore-eos" not in names:
        out.append("--ignore-eos")  # bench_serving's default: every request runs to its length
    # bench_serving's statistics: E2E latency too, and p90/p95/p99 (vLLM: TTFT/TPOT/ITL, p99).
    if "percentile-metrics" not in names:
        out += ["--percentile-metrics", "ttft,tpot,itl,e2el"]
    if "metric-percentiles" not in names:
        out += ["--metric-percentiles", "90,95,99"]
    out += ["--save-result", "--save-detailed", "--result-dir", result_dir]
    return [*out, "--result-filename", result_file]


def _vllm_backend(backend: str) -> str:
    """bench_serving's backend (the server's protocol) in vLLM's names: both speak OpenAI."""
    return "openai-chat" if backend.endswith("chat") else "openai"


def _centre(length: int, sglang_ratio: float) -> int:
    """bench_serving draws lengths in [L·r, L]; vLLM in [C(1−q), C(1+q)]: C = L(1+r)/2."""
    return max(1, round(length * (1 + sglang_ratio) / 2))


def _vllm_ratio(sglang_ratio: float) -> float:
    """q = (1−r)/(1+r), so both clients draw from the same range; vLLM wants q < 1."""
    ratio = min(max(sglang_ratio, 0.0), 1.0)
    return min((1 - ratio) / (1 + ratio), 0.999)


def _format(value: float) -> str:
    return f"{value:.6g}"


def dropped_for_vllm(flags: list[str]) -> list[str]:
    """bench_serving flags `vllm_argv` leaves out because vLLM's client has no such thing."""
    return [
        f"--{name}" for name, _ in split_flags(flags) if name in {"pd-separated", "flush-cache"}
    ]
