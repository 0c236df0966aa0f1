"""The rehearsal engine's command line: timing options before `--`, server flags after it.

Part of the rehearsal engine (`engine.py` is the entry point). Standard library only and
Python >= 3.8: these files are uploaded to hosts that have no toolkit installed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import NamedTuple

VERSION = "0.5.23-rehearsal"
VLLM_VERSION = "0.11.0-rehearsal"
FAKE_BOOTSTRAP_HOST = "2.2.2.2"  # sglang's marker for "no real prefill" (bench --fake-prefill)
KV_WAIT_TIMEOUT_S = 300.0  # sglang's default disaggregation waiting timeout
ROOM_TTL_S = 600.0
DEFAULT_MAX_NEW_TOKENS = 128
# Short words (3 letters on average, so 4 characters a token with the space): generated text,
# the offline dataset and the tiny tokenizer share them, so a client re-tokenizing the output
# gets exactly one token per word and the default --chars-per-token holds in rehearsals.
WORDS = (  # noqa: SIM905 (one string of words beats a hundred lines of literals)
    "the of and to in is it on at as by we he be or an do so up if no go me my us am all can "
    "had her was one our out day get has him his how man new now old see two way who boy did "
    "its let put say she too use any ask big buy far few got low may not off own run set sun "
    "top yes yet red map cup box tip door milk gold fire wind snow rain bird fish tree road "
    "book idea room home case week work part hand life good year time"
).split()

# name, type, default, help. Each is also read from TOOLKIT_REHEARSAL_<NAME>; the option wins.
TIMING_OPTIONS = (
    ("load-seconds", float, 2.0, "simulated weight load before /health turns 200"),
    ("tpot-ms", float, 20.0, "time per output token at batch 1"),
    ("tpot-slope-ms", float, 0.0, "extra TPOT per request decoding concurrently"),
    ("prefill-tokens-per-s", float, 20000.0, "prefill rate of this engine's prefill lane"),
    ("ttft-base-ms", float, 30.0, "fixed part of the prefill time"),
    ("chars-per-token", float, 4.0, "estimates prompt tokens from text"),
    ("accept-length", float, 2.5, "reported accept length with a speculative algorithm"),
    ("fail-after-seconds", float, None, "exit 1 after this many seconds (a node dying)"),
    ("rendezvous-timeout", float, 60.0, "multi-node: grace after load-seconds to rendezvous"),
    ("tokenizer-dir", str, None, "reported as tokenizer_path (a rehearsal tokenizer)"),
)
VLLM_SHORT_FLAGS = {
    "-tp": "tensor-parallel-size",
    "-dp": "data-parallel-size",
    "-pp": "pipeline-parallel-size",
    "-dpa": "data-parallel-address",
    "-dpp": "data-parallel-rpc-port",
    "-dpl": "data-parallel-size-local",
    "-dpr": "data-parallel-start-rank",
}

DESCRIPTION = "Rehearsal engine: a CPU stand-in for `sglang.launch_server` and `vllm serve`."

_print_lock = threading.Lock()


def log(message: str, level: str = "INFO") -> None:
    """One server-log line on stdout, flushed, like sglang's `[time] message` format."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    prefix = "" if level == "INFO" else level + ": "
    with _print_lock:
        print(f"[{stamp}] {prefix}{message}", flush=True)


# ---------------------------------------------------------------------------- command line


# NamedTuples, not dataclasses: importing dataclasses (and inspect) is a seventh of the
# engine's start-up, and a rehearsal starts one engine per node.
class Timing(NamedTuple):
    """The options before `--`: how the simulated server behaves over time."""

    load_seconds: float
    tpot_ms: float
    tpot_slope_ms: float
    prefill_tokens_per_s: float
    ttft_base_ms: float
    chars_per_token: float
    accept_length: float
    fail_after_seconds: float | None
    rendezvous_timeout: float
    tokenizer_dir: str | None


class Settings(NamedTuple):
    """The server flags the engine acts on; everything else in the planned argv is ignored."""

    engine: str  # "sglang" or "vllm"
    host: str
    port: int
    node_rank: int
    nnodes: int
    dist_init_addr: str | None
    mode: str  # "null", "prefill" or "decode"
    bootstrap_port: int
    served_model_name: str | None
    model_path: str
    tp_size: int
    dp_size: int
    speculative_algorithm: str | None
    speculative_num_draft_tokens: int | None
    max_running_requests: int | None
    context_length: int | None
    serves_http: bool = True  # False for `vllm serve --headless`

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model_path

    @property
    def is_leader(self) -> bool:
        return self.node_rank == 0


def parse_flags(tokens: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Tolerant argv parsing: `--flag v1 v2`, `--flag=v`, bare booleans; last occurrence wins.

    >>> parse_flags(["serve", "m", "--cuda-graph-bs", "1", "2", "--port=3", "--trust"])
    ({'cuda-graph-bs': ['1', '2'], 'port': ['3'], 'trust': []}, ['serve', 'm'])
    """
    flags: dict[str, list[str]] = {}
    positionals: list[str] = []
    current: list[str] | None = None
    for token in tokens:
        if token.startswith("--") and len(token) > 2:
            name, has_value, value = token[2:].partition("=")
            current = flags[name] = [value] if has_value else []
        elif token in VLLM_SHORT_FLAGS:
            current = flags[VLLM_SHORT_FLAGS[token]] = []
        elif current is not None:
            current.append(token)
        else:
            positionals.append(token)
    return flags, positionals


def _flag(flags: dict[str, list[str]], names: tuple[str, ...], default=None, cast=str):
    for name in names:
        values = flags.get(name)
        if values:
            try:
                return cast(values[0])
            except ValueError:
                raise SystemExit(
                    f"engine: --{name} expects {cast.__name__}, got {values!r}"
                ) from None
    return default


def sglang_settings(flags: dict[str, list[str]]) -> Settings:
    model_path = _flag(flags, ("model-path", "model"), "rehearsal-model")
    return Settings(
        engine="sglang",
        host=_flag(flags, ("host",), "127.0.0.1"),
        port=_flag(flags, ("port",), 30000, int),
        node_rank=_flag(flags, ("node-rank",), 0, int),
        nnodes=_flag(flags, ("nnodes",), 1, int),
        dist_init_addr=_flag(flags, ("dist-init-addr", "nccl-init-addr")),
        mode=_flag(flags, ("disaggregation-mode",), "null"),
        bootstrap_port=_flag(flags, ("disaggregation-bootstrap-port",), 8998, int),
        served_model_name=_flag(flags, ("served-model-name",)),
        model_path=model_path,
        tp_size=_flag(flags, ("tp-size", "tp", "tensor-parallel-size"), 1, int),
        dp_size=_flag(flags, ("dp-size", "data-parallel-size"), 1, int),
        speculative_algorithm=_flag(flags, ("speculative-algorithm", "speculative-algo")),
        speculative_num_draft_tokens=_flag(flags, ("speculative-num-draft-tokens",), None, int),
        max_running_requests=_flag(flags, ("max-running-requests",), None, int),
        context_length=_flag(flags, ("context-length",), None, int),
    )


def vllm_settings(flags: dict[str, list[str]], positionals: list[str]) -> Settings:
    """`vllm serve MODEL ...`: head node serves HTTP, `--headless` nodes only join."""
    args = positionals[1:] if positionals[:1] == ["serve"] else positionals
    model = _flag(flags, ("model",), args[0] if args else "rehearsal-model")
    dp_size = _flag(flags, ("data-parallel-size",), 1, int)
    dp_local = _flag(flags, ("data-parallel-size-local",), dp_size, int) or 1
    headless = "headless" in flags
    nnodes = _flag(flags, ("nnodes",), max(1, dp_size // dp_local), int)
    start_rank = _flag(flags, ("data-parallel-start-rank",), 0, int)
    node_rank = _flag(flags, ("node-rank",), start_rank // dp_local if headless else 0, int)
    if headless and node_rank == 0:
        node_rank = 1
    master = _flag(flags, ("master-addr",))
    if master:
        dist_init = f"{master}:{_flag(flags, ('master-port',), '29501')}"
    else:
        dp_addr = _flag(flags, ("data-parallel-address",))
        port = _flag(flags, ("data-parallel-rpc-port",), "29550")
        dist_init = f"{dp_addr}:{port}" if dp_addr else None
    return Settings(
        engine="vllm",
        host=_flag(flags, ("host",), "0.0.0.0"),
        port=_flag(flags, ("port",), 8000, int),
        node_rank=node_rank,
        nnodes=nnodes,
        dist_init_addr=dist_init,
        mode="null",
        bootstrap_port=0,
        served_model_name=_flag(flags, ("served-model-name",)),
        model_path=model,
        tp_size=_flag(flags, ("tensor-parallel-size",), 1, int),
        dp_size=dp_size,
        speculative_algorithm=None,
        speculative_num_draft_tokens=None,
        max_running_requests=_flag(flags, ("max-num-seqs",), None, int),
        context_length=_flag(flags, ("max-model-len",), None, int),
        serves_http=not headless,
    )


def parse_command_line(argv: list[str]) -> tuple[Timing, Settings]:
    """Timing options before `--`, the server's own argv after it."""
    ours, server = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :])
        if "--" in argv
        else (
            argv,
            [],
        )
    )
    parser = argparse.ArgumentParser(prog="engine.py", description=DESCRIPTION)
    parser.add_argument("--engine", choices=("sglang", "vllm"), default=_env("engine", "sglang"))
    for name, kind, default, text in TIMING_OPTIONS:
        env_name = "TOOLKIT_REHEARSAL_" + name.upper().replace("-", "_")
        parser.add_argument(
            "--" + name,
            type=kind,
            default=_env(name, default, kind, parser),
            help=f"{text} (default {default}; env {env_name})",
        )
    opts, rest = parser.parse_known_args(ours)
    server = rest + server  # without `--`, unknown options belong to the server
    timing = Timing(**{k: v for k, v in vars(opts).items() if k != "engine"})
    for name in ("prefill_tokens_per_s", "chars_per_token", "accept_length"):
        if getattr(timing, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    flags, positionals = parse_flags(server)
    settings = (
        vllm_settings(flags, positionals) if opts.engine == "vllm" else sglang_settings(flags)
    )
    return timing, settings


def _env(name: str, default, kind=str, parser: argparse.ArgumentParser | None = None):
    env_name = "TOOLKIT_REHEARSAL_" + name.upper().replace("-", "_")
    raw = os.environ.get(env_name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        if parser is not None:
            parser.error(f"{env_name}={raw!r} is not a valid {kind.__name__}")
        raise


def split_host_port(address: str) -> tuple[str, int]:
    """ "10.0.0.1:5000" or "[fd00::1]:5000" -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def preflight(s: Settings) -> str | None:
    """Configurations the real server would hang or die on."""
    if s.mode not in ("null", "prefill", "decode"):
        return f"--disaggregation-mode must be null, prefill or decode, not {s.mode!r}"
    if s.nnodes > 1 and not s.dist_init_addr:
        return (
            f"--nnodes {s.nnodes} needs --dist-init-addr HOST:PORT (rank 0's address); without"
            " it the real server would wait forever for the other nodes"
        )
    if not 0 <= s.node_rank < max(s.nnodes, 1):
        return f"--node-rank {s.node_rank} is out of range for --nnodes {s.nnodes}"
    if s.dist_init_addr:
        try:
            split_host_port(s.dist_init_addr)
        except ValueError as exc:
            return f"--dist-init-addr: {exc}"
    return None
