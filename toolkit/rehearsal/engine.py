#!/usr/bin/env python3
"""Rehearsal engine: a CPU stand-in for `python -m sglang.launch_server` and `vllm serve`.

`toolkit up --rehearse` runs the real cluster plan but starts this file on every node instead
of the model server, so hosts, ports, ranks, router and benchmark can be rehearsed in seconds
before a 20-minute weight load. It speaks the sglang server's HTTP protocol closely enough for
the real sglang-router (PD mode) and the real `sglang.bench_serving`, with simulated timing:

    python3 engine.py [timing options] -- <sglang launch_server flags>
    python3 engine.py --engine vllm [timing options] -- serve MODEL <vllm serve flags>

Flags after `--` it does not know are ignored. What is simulated for real, because these are
the mistakes a rehearsal exists to catch:
- multi-node rendezvous: rank 0 listens on the `--dist-init-addr` port, ranks >= 1 must reach
  it (with the same `--nnodes`, a unique `--node-rank`) or exit non-zero;
- PD bootstrap: prefill rank 0 listens on `--disaggregation-bootstrap-port`; a decode engine
  fetches each request's KV from the `bootstrap_host:bootstrap_port` the router injected, so a
  router pointed at the wrong prefill or bootstrap port fails requests with a clear error;
- timing: prefill time = ttft-base + input_tokens / prefill-rate (one prefill lane per engine),
  then one token per TPOT, TPOT = tpot + tpot-slope * requests decoding on this engine.

Standard library only, Python >= 3.8: it is uploaded to hosts that have no toolkit installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from typing import Callable, Iterator, NamedTuple  # noqa: UP035 (collections.abc is not subscriptable on 3.8)
from urllib.parse import parse_qs, urlsplit

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
    parser = argparse.ArgumentParser(prog="engine.py", description=__doc__.split("\n\n")[0])
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


# ---------------------------------------------------------------------------- generation


class EngineError(Exception):
    """A request failure with the HTTP status the real server would use."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Aborted(Exception):
    """The client went away or the engine is shutting down."""


class Bootstrap(NamedTuple):
    host: str
    port: int | None
    room: str


class Job:
    """One sequence of a request: its prompt size, output budget and output so far."""

    def __init__(self, prompt_tokens: int, limit: int, rid: str, boot: Bootstrap | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        self.rid = rid
        self.bootstrap = boot
        self.output_ids: list[int] = []
        self.pieces: list[str] = []
        self._seed = sum(rid.encode()) % len(WORDS)

    @property
    def finished(self) -> bool:
        return len(self.output_ids) >= self.limit

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def emit(self, count: int) -> list[str]:
        new = []
        for _ in range(min(count, self.limit - len(self.output_ids))):
            index = (self._seed + 7 * len(self.output_ids)) % len(WORDS)
            self.output_ids.append(100 + index)
            new.append(" " + WORDS[index])
        self.pieces.extend(new)
        return new


class RoomBoard:
    """Prefill side of the KV hand-off: which bootstrap rooms have finished prefill.

    A room is forgotten once decode has read its verdict, or after ROOM_TTL_S (rooms nobody
    asks about: mixed traffic, router retries with fresh rooms).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, list] = {}  # room -> [state, message, event, created]
        self._next_purge = time.monotonic() + ROOM_TTL_S

    def _entry(self, room: str) -> list:
        now = time.monotonic()
        with self._lock:
            if now > self._next_purge:
                self._rooms = {k: v for k, v in self._rooms.items() if v[3] > now - ROOM_TTL_S}
                self._next_purge = now + ROOM_TTL_S / 4
            return self._rooms.setdefault(room, ["pending", "", threading.Event(), now])

    def settle(self, room: str, state: str, message: str = "") -> None:
        """First verdict wins: a room that finished prefill stays done."""
        entry = self._entry(room)
        if entry[0] == "pending":
            entry[0], entry[1] = state, message
            entry[2].set()

    def wait(self, room: str, timeout: float) -> tuple[str, str]:
        entry = self._entry(room)
        entry[2].wait(timeout)
        if entry[0] != "pending":
            with self._lock:
                self._rooms.pop(room, None)
        return entry[0], entry[1]


class Engine:
    """Shared state of one simulated server: readiness, counters, timing lanes."""

    def __init__(self, settings: Settings, timing: Timing) -> None:
        self.settings = settings
        self.timing = timing
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.exit_code = 0
        self.started = time.monotonic()
        self.board = RoomBoard()
        self._lock = threading.Lock()
        self._prefill_free_at = 0.0
        self._bootstrap_cache: dict[tuple[str, int], tuple[str | None, float]] = {}
        limit = settings.max_running_requests
        self._slots = threading.BoundedSemaphore(limit) if limit else None
        self.running = self.waiting = self.decoding = self.tokens_in_flight = 0
        self.requests_total = self.prompt_tokens_total = self.generation_tokens_total = 0

    @property
    def speculative(self) -> bool:
        return bool(self.settings.speculative_algorithm)

    def fail(self, message: str) -> None:
        """Log and stop the process with status 1 (what a crashing server does)."""
        if not self.stop.is_set():
            log(message, "ERROR")
            self.exit_code = 1
            self.stop.set()

    def estimate_tokens(self, text: str) -> int:
        return max(1, math.ceil(len(text) / self.timing.chars_per_token))

    # -- admission and accounting

    def _admit(self, jobs: list[Job]) -> None:
        with self._lock:
            self.waiting += 1
        try:
            while self._slots is not None and not self._slots.acquire(timeout=0.2):
                if self.stop.is_set():
                    raise Aborted()
        finally:
            with self._lock:
                self.waiting -= 1
        with self._lock:
            self.running += 1
            self.requests_total += 1
            prompt = sum(job.prompt_tokens for job in jobs)
            self.prompt_tokens_total += prompt
            self.tokens_in_flight += prompt

    def _release(self, jobs: list[Job]) -> None:
        with self._lock:
            self.running -= 1
            self.tokens_in_flight -= sum(j.prompt_tokens + len(j.output_ids) for j in jobs)
        if self._slots is not None:
            self._slots.release()

    def _emit(self, jobs: list[Job], count: int) -> None:
        produced = sum(len(job.emit(count)) for job in jobs)
        with self._lock:
            self.generation_tokens_total += produced
            self.tokens_in_flight += produced

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0 and self.stop.wait(remaining):
            raise Aborted()

    # -- the request lifecycle

    def run(self, jobs: list[Job], client_gone: Callable[[], bool]) -> Iterator[None]:
        """Advances `jobs` through prefill and decode; yields after every token step."""
        self._admit(jobs)
        try:
            yield from self._phases(jobs, client_gone)
        finally:
            self._release(jobs)

    def _phases(self, jobs: list[Job], client_gone: Callable[[], bool]) -> Iterator[None]:
        mode = self.settings.mode
        if mode == "decode":
            self._await_kv(jobs, client_gone)
        else:
            self._prefill(sum(job.prompt_tokens for job in jobs))
        self._emit(jobs, 1)
        if mode == "prefill":
            for job in jobs:
                if job.bootstrap is not None:
                    self.board.settle(job.bootstrap.room, "done")
        yield
        active = [job for job in jobs if not job.finished]
        with self._lock:
            self.decoding += len(active)
        try:
            yield from self._decode(jobs)
        finally:
            with self._lock:
                self.decoding -= len(active)

    def _prefill(self, tokens: int) -> None:
        """One prefill lane per engine: concurrent prompts queue behind each other."""
        now = time.monotonic()
        with self._lock:
            begin = max(now, self._prefill_free_at)
            self._prefill_free_at = begin + tokens / self.timing.prefill_tokens_per_s
            done = self._prefill_free_at
        self._sleep_until(done + self.timing.ttft_base_ms / 1000.0)

    def _decode(self, jobs: list[Job]) -> Iterator[None]:
        credit, deadline = 0.0, time.monotonic()
        accept = max(self.timing.accept_length, 1.0) if self.speculative else 1.0
        while not all(job.finished for job in jobs):
            with self._lock:
                tpot = (self.timing.tpot_ms + self.timing.tpot_slope_ms * self.decoding) / 1000
            credit += accept
            burst = max(1, int(credit))
            credit -= burst
            deadline = max(deadline + tpot * accept, time.monotonic())
            self._sleep_until(deadline)
            self._emit(jobs, burst)
            yield

    # -- decode side of the KV hand-off

    def check_bootstrap(self, jobs: list[Job]) -> None:
        """Decode: before answering, require bootstrap info and a reachable prefill for it."""
        if self.settings.mode != "decode":
            return
        for job in jobs:
            boot = job.bootstrap
            if boot is None:
                raise EngineError(
                    400,
                    "decode server needs bootstrap_host and bootstrap_room in the request "
                    "(normally injected by the router in PD mode)",
                )
            if boot.host != FAKE_BOOTSTRAP_HOST:
                self._probe_bootstrap(boot.host, self._port_of(boot))

    def _port_of(self, boot: Bootstrap) -> int:
        # sglang substitutes its own --disaggregation-bootstrap-port for a null port.
        return boot.port if boot.port is not None else self.settings.bootstrap_port

    def _probe_bootstrap(self, host: str, port: int) -> None:
        key, now = (host, port), time.monotonic()
        with self._lock:
            cached = self._bootstrap_cache.get(key)
        if cached is None or cached[1] < now:
            problem = _bootstrap_problem(host, port)
            with self._lock:
                self._bootstrap_cache[key] = (problem, now + (2.0 if problem else 30.0))
        else:
            problem = cached[0]
        if problem:
            raise EngineError(500, problem)

    def _await_kv(self, jobs: list[Job], client_gone: Callable[[], bool]) -> None:
        """Decode waits until the paired prefill finished each job's room, like a KV transfer."""
        fake = [
            job
            for job in jobs
            if job.bootstrap is None or job.bootstrap.host == FAKE_BOOTSTRAP_HOST
        ]
        if fake:
            tokens = sum(job.prompt_tokens for job in fake)
            seconds = self.timing.ttft_base_ms / 1000 + tokens / self.timing.prefill_tokens_per_s
            self._sleep_until(time.monotonic() + seconds)
        for job in jobs:
            if job not in fake:
                self._await_room(job.bootstrap, client_gone)

    def _await_room(self, boot: Bootstrap, client_gone: Callable[[], bool]) -> None:
        port = self._port_of(boot)
        where = host_port(boot.host, port)
        deadline = time.monotonic() + KV_WAIT_TIMEOUT_S
        while True:
            if self.stop.is_set() or client_gone():
                raise Aborted()
            try:
                reply = _http_json(boot.host, port, f"/rehearsal/kv?room={boot.room}&wait=1", 10)
            except (OSError, ValueError) as exc:
                message = f"KV transfer from prefill bootstrap {where} failed: {exc}"
                raise EngineError(500, message) from exc
            if reply.get("state") == "done":
                return
            if reply.get("state") == "failed":
                message = f"prefill at {where} failed room {boot.room}: {reply.get('message')}"
                raise EngineError(500, message)
            if time.monotonic() > deadline:
                raise EngineError(
                    500, f"timed out waiting for prefill KV of room {boot.room} from {where}"
                )


def _http_json(host: str, port: int, path: str, timeout: float) -> dict:
    import http.client  # only decode nodes fetch KV; imported here to keep start-up light

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status} {body[:200].decode('utf-8', 'replace')}")
    return json.loads(body)


def _bootstrap_problem(host: str, port: int) -> str | None:
    """None if host:port is a rehearsal prefill bootstrap server, else why not."""
    where = host_port(host, port)
    hint = (
        " (the router injects bootstrap_host from its --prefill URL and bootstrap_port from the"
        " number after it; it must be the prefill's --disaggregation-bootstrap-port)"
    )
    try:
        info = _http_json(host, port, "/rehearsal/bootstrap", 3.0)
    except OSError as exc:
        return f"cannot connect to the prefill bootstrap server at {where}: {exc}{hint}"
    except ValueError as exc:
        return f"{where} answered but is not a prefill bootstrap server ({exc}){hint}"
    if not isinstance(info, dict) or info.get("role") != "prefill-bootstrap":
        return f"{where} answered but is not a prefill bootstrap server{hint}"
    return None


# ---------------------------------------------------------------------------- request bodies


def _per_item(value, count: int, name: str) -> list:
    if isinstance(value, list):
        if len(value) != count:
            raise EngineError(400, f"{name} has {len(value)} entries for a batch of {count}")
        return value
    return [value] * count


def _bootstraps(body: dict, count: int) -> list[Bootstrap | None]:
    hosts = _per_item(body.get("bootstrap_host"), count, "bootstrap_host")
    ports = _per_item(body.get("bootstrap_port"), count, "bootstrap_port")
    rooms = _per_item(body.get("bootstrap_room"), count, "bootstrap_room")
    out: list[Bootstrap | None] = []
    for host, port, room in zip(hosts, ports, rooms):  # noqa: B905 (strict= needs 3.10)
        if host is None or room is None:
            out.append(None)
        else:
            out.append(Bootstrap(str(host), None if port is None else int(port), str(room)))
    return out


def _limit(value, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EngineError(400, f"max new tokens must be a non-negative integer, got {value!r}")
    return value


def _make_jobs(
    engine: Engine, body: dict, counts: list[int], limits: list[int], exact: bool
) -> list[Job]:
    rids = body.get("rid")
    rids = rids if isinstance(rids, list) else [rids] * len(counts)
    context = engine.settings.context_length
    jobs = []
    boots = _bootstraps(body, len(counts))
    for count, limit, rid, boot in zip(counts, limits, rids, boots):  # noqa: B905 (3.8)
        if exact and context and count >= context:
            raise EngineError(
                400,
                f"The input ({count} tokens) is longer than the model's context length"
                f" ({context} tokens).",
            )
        if engine.settings.mode == "prefill":
            limit = min(limit, 1)  # prefill produces the first token; decode does the rest
        jobs.append(Job(count, limit, str(rid) if rid else os.urandom(16).hex(), boot))
    return jobs


def generate_jobs(engine: Engine, body: dict) -> tuple[list[Job], bool]:
    """sglang `/generate`: `text` or `input_ids`, single or batch."""
    ids, text = body.get("input_ids"), body.get("text")
    if ids is not None:
        batch = bool(ids) and isinstance(ids[0], list)
        counts, exact = ([len(x) for x in ids] if batch else [len(ids)]), True
    elif text is not None:
        batch = isinstance(text, list)
        counts, exact = [engine.estimate_tokens(t) for t in (text if batch else [text])], False
    else:
        raise EngineError(400, "Either text or input_ids should be provided.")
    params = _per_item(body.get("sampling_params") or {}, len(counts), "sampling_params")
    limits = [_limit((p or {}).get("max_new_tokens"), DEFAULT_MAX_NEW_TOKENS) for p in params]
    return _make_jobs(engine, body, counts, limits, exact), batch


def completion_jobs(engine: Engine, body: dict) -> list[Job]:
    """OpenAI `/v1/completions`: `prompt` is text, token ids, or a batch of either."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise EngineError(400, "prompt must be a string, token ids, or a non-empty list of them")
    counts = [len(p) if isinstance(p, list) else engine.estimate_tokens(str(p)) for p in prompts]
    limit = _limit(body.get("max_tokens"), 16)
    exact = all(isinstance(p, list) for p in prompts)
    return _make_jobs(engine, body, counts, [limit] * len(counts), exact)


def chat_jobs(engine: Engine, body: dict) -> list[Job]:
    """OpenAI `/v1/chat/completions`: prompt size from the message texts plus template."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EngineError(400, "messages must be a non-empty list")
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        chars += sum(len(p.get("text", "")) if isinstance(p, dict) else len(p or "") for p in parts)
    count = engine.estimate_tokens("x" * chars) + 4 * len(messages)  # + the chat template
    raw_limit = body.get("max_completion_tokens")
    limit = _limit(
        raw_limit if raw_limit is not None else body.get("max_tokens"), DEFAULT_MAX_NEW_TOKENS
    )
    return _make_jobs(engine, body, [count], [limit], False)


# ---------------------------------------------------------------------------- response bodies


def generate_object(engine: Engine, job: Job, started: float) -> dict:
    meta = {
        "id": job.rid,
        "finish_reason": {"type": "length", "length": job.limit} if job.finished else None,
        "prompt_tokens": job.prompt_tokens,
        "weight_version": "default",
        "num_retractions": 0,
        "reasoning_tokens": 0,
        "completion_tokens": len(job.output_ids),
        "cached_tokens": 0,
    }
    if engine.speculative:
        accept = max(engine.timing.accept_length, 1.0)
        meta["spec_accept_length"] = accept
        meta["spec_verify_ct"] = math.ceil(len(job.output_ids) / accept)
    if job.finished:
        meta["e2e_latency"] = round(time.monotonic() - started, 6)
    return {"text": job.text, "output_ids": list(job.output_ids), "meta_info": meta}


def usage_object(jobs: list[Job]) -> dict:
    prompt = sum(job.prompt_tokens for job in jobs)
    completion = sum(len(job.output_ids) for job in jobs)
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


class OpenAIStream:
    """Turns job progress into OpenAI completion or chat chunks (text deltas)."""

    def __init__(self, engine: Engine, jobs: list[Job], chat: bool, model: str) -> None:
        self.jobs, self.chat, self.model = jobs, chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + os.urandom(16).hex()
        self.created = int(time.time())
        self._sent = [0] * len(jobs)
        self._finished_sent = [False] * len(jobs)

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def step(self) -> list[dict]:
        out = []
        for index, job in enumerate(self.jobs):
            delta = "".join(job.pieces[self._sent[index] :])
            first = self._sent[index] == 0
            self._sent[index] = len(job.pieces)
            if self.chat:
                if first and delta:
                    role = {"role": "assistant", "content": "", "reasoning_content": None}
                    out.append(self._chunk([self._choice(index, role, None)]))
                if delta:
                    out.append(self._chunk([self._choice(index, self._delta(delta), None)]))
                if job.finished and not self._finished_sent[index]:
                    out.append(self._chunk([self._choice(index, self._delta(None), "length")]))
            elif delta or (job.finished and not self._finished_sent[index]):
                reason = "length" if job.finished else None
                choice = {"index": index, "text": delta, "logprobs": None}
                choice.update(finish_reason=reason, matched_stop=None)
                out.append(self._chunk([choice]))
            self._finished_sent[index] = job.finished
        return out

    @staticmethod
    def _delta(content: str | None) -> dict:
        return {"role": None, "content": content, "reasoning_content": None}

    @staticmethod
    def _choice(index: int, delta: dict, reason: str | None) -> dict:
        return {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": reason,
            "matched_stop": None,
        }

    def usage_chunk(self) -> dict:
        return self._chunk([], usage_object(self.jobs))

    def response(self) -> dict:
        choices = []
        for index, job in enumerate(self.jobs):
            choice: dict = {"index": index}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": job.text, "tool_calls": None}
                choice["message"]["reasoning_content"] = None
            else:
                choice["text"] = job.text
            choice.update(logprobs=None, finish_reason="length", matched_stop=None)
            choices.append(choice)
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage_object(self.jobs),
        }


def server_info(engine: Engine) -> dict:
    s, t = engine.settings, engine.timing
    state: dict = {"last_gen_throughput": 0.0, "#running_req": engine.running}
    if engine.speculative:
        state["avg_spec_accept_length"] = max(t.accept_length, 1.0)
    return {
        "model_path": s.model_path,
        "tokenizer_path": t.tokenizer_dir or s.model_path,
        "served_model_name": s.model_id,
        "host": s.host,
        "port": s.port,
        "tp_size": s.tp_size,
        "dp_size": s.dp_size,
        "nnodes": s.nnodes,
        "node_rank": s.node_rank,
        "dist_init_addr": s.dist_init_addr,
        "disaggregation_mode": s.mode,
        "disaggregation_bootstrap_port": s.bootstrap_port,
        "speculative_algorithm": s.speculative_algorithm,
        "speculative_num_draft_tokens": s.speculative_num_draft_tokens,
        "max_running_requests": s.max_running_requests,
        "context_length": s.context_length,
        "internal_states": [state],
        "version": VERSION,
        "rehearsal": True,
        "rehearsal_timing": t._asdict(),
    }


def model_info(engine: Engine) -> dict:
    s = engine.settings
    return {
        "model_path": s.model_path,
        "served_model_name": s.model_id,
        "tokenizer_path": engine.timing.tokenizer_dir or s.model_path,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "load_format": "rehearsal",
        "reasoning_parser": None,
        "tool_call_parser": None,
        "disaggregation_mode": s.mode,
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": "rehearsal",
        "architectures": ["RehearsalForCausalLM"],
    }


def models_list(engine: Engine) -> dict:
    s = engine.settings
    card = {
        "id": s.model_id,
        "object": "model",
        "created": int(time.time() - (time.monotonic() - engine.started)),
        "owned_by": s.engine,
        "root": s.model_path,
        "parent": None,
        "max_model_len": s.context_length or 131072,
    }
    return {"object": "list", "data": [card]}


def metrics_text(engine: Engine) -> str:
    vllm = engine.settings.engine == "vllm"
    prefix = "vllm:" if vllm else "sglang:"
    labels = '{{model_name="{}"}}'.format(engine.settings.model_id.replace('"', ""))
    rows = (
        ("num_requests_running" if vllm else "num_running_reqs", "gauge", engine.running),
        ("num_requests_waiting" if vllm else "num_queue_reqs", "gauge", engine.waiting),
        ("prompt_tokens_total", "counter", engine.prompt_tokens_total),
        ("generation_tokens_total", "counter", engine.generation_tokens_total),
        (
            "request_success_total" if vllm else "num_requests_total",
            "counter",
            engine.requests_total,
        ),
    )
    lines = []
    for name, kind, value in rows:
        lines.append(
            "# HELP {}{} Rehearsal engine {}.".format(prefix, name, name.replace("_", " "))
        )
        lines.append(f"# TYPE {prefix}{name} {kind}")
        lines.append(f"{prefix}{name}{labels} {float(value)}")
    if engine.speculative:
        lines.append("# TYPE sglang:spec_accept_length gauge")
        lines.append(f"sglang:spec_accept_length{labels} {engine.timing.accept_length}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- HTTP


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class HTTPHandler(socketserver.StreamRequestHandler):
    """The part of HTTP/1.1 the model server's clients use: keep-alive, Content-Length and
    chunked bodies. Hand-written rather than `http.server`: that module drags in http.client,
    email and ssl, about half of the engine's import time, and a rehearsal starts one engine
    per node.

    Subclasses define `do_<METHOD>` and answer with send_response/send_header/end_headers.
    """

    server_version = "uvicorn"
    max_header_lines = 200

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            if not self._read_request():
                return
            handler = getattr(self, "do_" + self.command, None)
            if handler is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
            else:
                handler()
            self.wfile.flush()

    def _read_request(self) -> bool:
        """Reads the request line and headers; False when the connection should end."""
        line = self.rfile.readline(65537)
        if not line:
            return False
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        self.command, self.path, self.request_version = "", "", "HTTP/1.1"
        if line.startswith(b"PRI * HTTP/2"):
            # The router's gRPC probe opens with an h2c preface; answer as an HTTP/1.1-only
            # server does.
            self.requestline = "PRI * HTTP/2.0"
            self.send_error(505, "HTTP/2 is not supported; this server speaks HTTP/1.1")
            return False
        words = self.requestline.split()
        if len(line) > 65536 or len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, f"Bad request line {self.requestline[:100]!r}")
            return False
        self.command, self.path, self.request_version = words
        self.headers = Headers()
        for _ in range(self.max_header_lines):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                self.send_error(400, "Malformed header line")
                return False
            self.headers[name.strip()] = value.strip()
        else:
            self.send_error(431, "Too many headers")
            return False
        connection = self.headers.get("Connection", "").lower()
        http10 = self.request_version == "HTTP/1.0"
        self.close_connection = connection == "close" or (http10 and connection != "keep-alive")
        if self.headers.get("Expect", "").lower() == "100-continue" and not http10:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl asks before big bodies
        return True

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        phrase = message or _phrase(code)
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        self._head = [f"HTTP/1.1 {code} {phrase}", f"Server: {self.server_version}"]
        self._head.append(f"Date: {date}")

    def send_header(self, name: str, value: str) -> None:
        self._head.append(f"{name}: {value}")
        if name.lower() == "connection" and value.lower() == "close":
            self.close_connection = True

    def end_headers(self) -> None:
        self.wfile.write(("\r\n".join(self._head) + "\r\n\r\n").encode("latin-1"))

    def send_error(self, code: int, message: str) -> None:
        body = _dumps({"detail": message})
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int) -> None:
        pass


class Headers(dict):
    """Request headers, looked up case-insensitively."""

    def __setitem__(self, name: str, value: str) -> None:
        super().__setitem__(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


class Handler(HTTPHandler):
    """The model server's HTTP API (uvicorn look-alike: HTTP/1.1, keep-alive, chunked SSE)."""

    @property
    def engine(self) -> Engine:
        return self.server.engine  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_request(self, code: int) -> None:
        peer = host_port(*self.client_address[:2])
        log(f'INFO:     {peer} - "{self.requestline}" {code} {_phrase(code)}')

    def _dispatch(self, method: str) -> None:
        self._streaming = False
        try:
            raw = self._read_body()
            path = urlsplit(self.path).path
            routes = self.server.routes  # type: ignore[attr-defined]
            if path not in routes:
                return self._json(404, {"detail": "Not Found"})
            methods, action = routes[path]
            if method not in methods:
                return self._json(405, {"detail": "Method Not Allowed"})
            action(self, raw)
        except EngineError as exc:
            log(f"{method} {self.path} failed: {exc.message}", "ERROR")
            self._json(exc.status, {"error": {"message": exc.message, "code": exc.status}})
        except (Aborted, OSError):
            self.close_connection = True
        except Exception as exc:  # a malformed body we did not foresee: answer, do not hang up
            log(f"{method} {self.path} failed: {exc!r}", "ERROR")
            if self._streaming:
                self.close_connection = True
            else:
                self._json(500, {"error": {"message": repr(exc), "code": 500}})

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise EngineError(400, f"invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise EngineError(400, "the JSON body must be an object")
        return body

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, _dumps(obj), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _client_gone(self) -> bool:
        """True once the peer closed the connection (poll: no FD_SETSIZE limit)."""
        try:
            poller = select.poll()
            poller.register(self.connection, select.POLLIN)
            readable = poller.poll(0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- streaming

    def _start_stream(self) -> None:
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, payload: bytes) -> None:
        data = b"data: " + payload + b"\n\n"
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self._sse(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    def _run(
        self, jobs: list[Job], stream: bool, chunks: Callable[[], list[dict]], final: Callable
    ) -> None:
        """Runs jobs; streams `chunks()` after every step, or answers `final()` at the end."""
        try:
            self._run_jobs(jobs, stream, chunks, final)
        except BaseException as exc:
            if self.engine.settings.mode == "prefill":  # so the paired decode stops waiting
                for job in jobs:
                    if job.bootstrap is not None:
                        self.engine.board.settle(job.bootstrap.room, "failed", repr(exc))
            raise

    def _run_jobs(
        self, jobs: list[Job], stream: bool, chunks: Callable[[], list[dict]], final: Callable
    ) -> None:
        if not self.engine.ready.is_set():
            raise EngineError(503, "the server is still loading (rehearsal)")
        self.engine.check_bootstrap(jobs)
        steps = self.engine.run(jobs, self._client_gone)
        if not stream:
            for _ in steps:
                pass
            return self._json(200, final())
        self._start_stream()
        try:
            for _ in steps:
                for chunk in chunks():
                    self._sse(_dumps(chunk))
        except EngineError as exc:
            log(f"{self.command} {self.path} failed: {exc.message}", "ERROR")
            self._sse(_dumps({"error": {"message": exc.message, "code": exc.status}}))
        self._end_stream()
        return None

    # -- routes

    def health(self, raw: bytes) -> None:
        self._send(200 if self.engine.ready.is_set() else 503, b"", "text/plain")

    def generate(self, raw: bytes) -> None:
        body = self._body(raw)
        jobs, batch = generate_jobs(self.engine, body)
        started = time.monotonic()

        def objects() -> list[dict]:
            return [generate_object(self.engine, job, started) for job in jobs]

        stream = bool(body.get("stream")) and not batch
        self._run(jobs, stream, objects, lambda: objects() if batch else objects()[0])

    def completions(self, raw: bytes) -> None:
        self._openai(raw, chat=False)

    def chat_completions(self, raw: bytes) -> None:
        self._openai(raw, chat=True)

    def _openai(self, raw: bytes, chat: bool) -> None:
        body = self._body(raw)
        engine = self.engine
        model = body.get("model") or engine.settings.model_id
        if engine.settings.engine == "vllm" and model not in (
            engine.settings.model_id,
            engine.settings.model_path,
        ):
            raise EngineError(404, f"The model `{model}` does not exist.")
        jobs = chat_jobs(engine, body) if chat else completion_jobs(engine, body)
        view = OpenAIStream(engine, jobs, chat, model)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunks() -> list[dict]:
            out = view.step()
            if usage and all(job.finished for job in jobs):
                out.append(view.usage_chunk())
            return out

        self._run(jobs, bool(body.get("stream")), chunks, view.response)

    def server_info(self, raw: bytes) -> None:
        self._json(200, server_info(self.engine))

    def model_info(self, raw: bytes) -> None:
        self._json(200, model_info(self.engine))

    def models(self, raw: bytes) -> None:
        self._json(200, models_list(self.engine))

    def flush_cache(self, raw: bytes) -> None:
        if self.engine.running:
            return self._text(400, "Cache not flushed: requests are running (rehearsal).\n")
        self._text(200, "Cache flushed.\nPlease check backend logs for more details.\n")

    def get_load(self, raw: bytes) -> None:
        e = self.engine
        load = {"dp_rank": 0, "num_reqs": e.running, "num_waiting_reqs": e.waiting}
        load["num_tokens"] = e.tokens_in_flight
        self._json(200, [load])

    def metrics(self, raw: bytes) -> None:
        self._send(200, metrics_text(self.engine).encode(), "text/plain; version=0.0.4")

    def version(self, raw: bytes) -> None:
        self._json(200, {"version": VLLM_VERSION})

    def reset_prefix_cache(self, raw: bytes) -> None:
        self._send(200, b"", "text/plain")


GET, POST, BOTH = ("GET",), ("POST",), ("GET", "POST")
HEALTH_ROUTES = {p: (GET, Handler.health) for p in ("/health", "/health_generate", "/ping")}
SGLANG_ROUTES = dict(
    HEALTH_ROUTES,
    **{
        "/ready": (GET, Handler.health),
        "/server_info": (GET, Handler.server_info),
        "/get_server_info": (GET, Handler.server_info),
        "/model_info": (GET, Handler.model_info),
        "/get_model_info": (GET, Handler.model_info),
        "/v1/models": (GET, Handler.models),
        "/generate": (POST, Handler.generate),
        "/v1/completions": (POST, Handler.completions),
        "/v1/chat/completions": (POST, Handler.chat_completions),
        "/flush_cache": (BOTH, Handler.flush_cache),
        "/get_load": (GET, Handler.get_load),
        "/metrics": (GET, Handler.metrics),
    },
)
VLLM_ROUTES = {
    "/health": (GET, Handler.health),
    "/ping": (BOTH, Handler.health),
    "/version": (GET, Handler.version),
    "/v1/models": (GET, Handler.models),
    "/v1/completions": (POST, Handler.completions),
    "/v1/chat/completions": (POST, Handler.chat_completions),
    "/reset_prefix_cache": (POST, Handler.reset_prefix_cache),
    "/metrics": (GET, Handler.metrics),
}


class BootstrapHandler(HTTPHandler):
    """Prefill's KV bootstrap port: answers port checks, and tells decode when a room is done."""

    def do_GET(self) -> None:
        self._read_body()
        url = urlsplit(self.path)
        engine: Engine = self.server.engine  # type: ignore[attr-defined]
        if url.path == "/rehearsal/bootstrap":
            info = {
                "role": "prefill-bootstrap",
                "rehearsal": True,
                "model": engine.settings.model_id,
            }
            return self._reply(_dumps(dict(info, http_port=engine.settings.port)))
        if url.path == "/rehearsal/kv":
            query = parse_qs(url.query)
            wait = min(float(query.get("wait", ["1"])[0]), 5.0)
            state, message = engine.board.wait(query.get("room", [""])[0], wait)
            return self._reply(_dumps({"state": state, "message": message}))
        self._reply(b"OK" if url.path == "/health" else b"{}")

    def do_PUT(self) -> None:  # prefill ranks >= 1 register with PUT /route
        self._read_body()
        self._reply(b"OK")

    do_POST = do_DELETE = do_PUT

    def _read_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ThreadingHTTPServer(socketserver.ThreadingTCPServer):
    # No reverse lookup of the bind address (http.server's getfqdn stalls for seconds where
    # no DNS resolver answers: test network namespaces, air-gapped clusters).
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


# ---------------------------------------------------------------------------- multi-node

RENDEZVOUS_HELLO = "TOOLKIT-REHEARSAL-RENDEZVOUS"


class Rendezvous:
    """Rank 0's side of the simulated torch.distributed rendezvous on the dist-init port."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.joined: dict[int, socket.socket] = {}
        self.changed = threading.Condition()

    def join(self, rank: int, nnodes: int, sock: socket.socket, peer: str) -> str | None:
        expected = self.engine.settings.nnodes
        if nnodes != expected:
            return f"node says --nnodes {nnodes} but rank 0 has --nnodes {expected}"
        if not 1 <= rank < expected:
            return f"--node-rank {rank} is out of range for --nnodes {expected}"
        with self.changed:
            if rank in self.joined:
                return f"node rank {rank} already joined (two nodes with the same --node-rank?)"
            self.joined[rank] = sock
            self.changed.notify_all()
        log(f"Node rank {rank} joined the rendezvous from {peer}")
        return None

    def leave(self, rank: int, graceful: bool, peer: str) -> None:
        with self.changed:
            self.joined.pop(rank, None)
        if self.engine.stop.is_set():
            return  # we are shutting down ourselves
        if graceful:
            log(f"Node rank {rank} ({peer}) left the rendezvous", "WARNING")
        else:
            self.engine.fail(f"Node rank {rank} ({peer}) dropped out of the rendezvous")

    def wait_all(self, deadline: float) -> list[int]:
        """Blocks until every rank >= 1 joined; returns the ranks still missing at the deadline."""
        wanted = set(range(1, self.engine.settings.nnodes))
        with self.changed:
            while not wanted <= set(self.joined) and not self.engine.stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(min(remaining, 0.5))
            return sorted(wanted - set(self.joined))

    def close(self) -> None:
        with self.changed:
            for sock in self.joined.values():
                with contextlib.suppress(OSError):
                    sock.sendall(b"BYE\n")


class RendezvousHandler(socketserver.StreamRequestHandler):
    """`HELLO rank=R nnodes=N` -> `OK` or `ERROR why`; then holds the connection open."""

    def handle(self) -> None:
        rendezvous: Rendezvous = self.server.rendezvous  # type: ignore[attr-defined]
        peer = host_port(*self.client_address[:2])
        self.request.settimeout(10)
        try:
            words = self.rfile.readline(300).decode("utf-8", "replace").split()
            fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
            if words[:1] != [RENDEZVOUS_HELLO]:
                return  # a port check or a stranger: close, like a TCPStore would
            rank, nnodes = int(fields.get("rank", -1)), int(fields.get("nnodes", -1))
        except (OSError, ValueError):
            return
        problem = rendezvous.join(rank, nnodes, self.request, peer)
        if problem:
            log(f"Rejected rendezvous from {peer}: {problem}", "ERROR")
            self.wfile.write((f"ERROR {problem}\n").encode())
            return
        self.wfile.write(b"OK\n")
        self.request.settimeout(None)
        try:
            graceful = self.rfile.readline().startswith(b"BYE")
        except OSError:
            graceful = False
        rendezvous.leave(rank, graceful, peer)


class _RendezvousServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def join_rank0(engine: Engine, deadline: float) -> socket.socket | None:
    """Rank >= 1: connect to rank 0's dist-init address, retrying until the deadline."""
    s = engine.settings
    host, port = split_host_port(s.dist_init_addr or "")
    where = host_port(host, port)
    hello = f"{RENDEZVOUS_HELLO} rank={s.node_rank} nnodes={s.nnodes}\n".encode()
    last_error = "no attempt"
    while not engine.stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=2)
            sock.settimeout(10)
            sock.sendall(hello)
            reply = _read_line(sock)
            if reply == "OK":
                sock.settimeout(None)
                return sock
            sock.close()
            if reply.startswith("ERROR"):
                engine.fail(f"Rank 0 at --dist-init-addr {where} refused this node: {reply[6:]}")
                return None
            last_error = f"the port answered but it is not rank 0's rendezvous ({reply[:60]!r})"
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            waited = deadline - engine.started
            engine.fail(
                f"Could not reach rank 0 at --dist-init-addr {where} within {waited:.0f} s:"
                f" {last_error}"
            )
            return None
        engine.stop.wait(0.5)
    return None


def _read_line(sock: socket.socket) -> str:
    """One short line, read byte by byte so nothing after it is consumed."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 300:
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data.decode("utf-8", "replace").strip()


def watch_rank0(engine: Engine, sock: socket.socket) -> None:
    """Rank >= 1 lives as long as rank 0: BYE is a clean shutdown, EOF is a crash."""
    try:
        line = _read_line(sock)
    except OSError:
        line = ""
    if line == "BYE":
        log("Rank 0 shut down; exiting")
        engine.stop.set()
    else:
        where = engine.settings.dist_init_addr
        engine.fail(f"Lost the connection to rank 0 at {where} (it exited or crashed)")


# ---------------------------------------------------------------------------- process


def startup(engine: Engine, rendezvous: Rendezvous | None) -> None:
    """Rendezvous (multi-node), simulated weight load, then ready."""
    s, t = engine.settings, engine.timing
    deadline = engine.started + t.load_seconds + t.rendezvous_timeout
    if s.nnodes > 1 and rendezvous is not None:
        missing = rendezvous.wait_all(deadline)
        if missing:
            waited = deadline - engine.started
            return engine.fail(
                f"Timed out after {waited:.0f} s waiting for node ranks {missing} to join the"
                f" rendezvous at --dist-init-addr {s.dist_init_addr} (check their"
                " --dist-init-addr, --nnodes and --node-rank)"
            )
    elif s.nnodes > 1:
        sock = join_rank0(engine, deadline)
        if sock is None:
            return None
        log(f"Joined the rendezvous at {s.dist_init_addr} as node rank {s.node_rank} of {s.nnodes}")
        threading.Thread(target=watch_rank0, args=(engine, sock), daemon=True).start()
        engine.rank0_socket = sock  # type: ignore[attr-defined]
    log(f"Load weight begin. (rehearsal: simulated, {t.load_seconds:.1f} s)")
    if engine.stop.wait(t.load_seconds):
        return None
    log("Load weight end.")
    engine.ready.set()
    if not s.serves_http:
        log(f"Headless engine ready (node rank {s.node_rank})")
    elif s.engine == "vllm":
        log("Application startup complete.")
    elif s.is_leader:
        log("The server is fired up and ready to roll!")
    else:
        log(
            f"Dummy health check server started in background thread at {host_port(s.host, s.port)}"
        )
    return None


class ListenError(Exception):
    """A port the plan gives this node cannot be bound (in use, or not this node's address)."""


def listen(base: type, host: str, port: int, handler: type, what: str, **attrs: object):
    """A started-but-not-serving server of class `base` on host:port, with `attrs` set."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type(base.__name__, (base,), {"address_family": family})
    try:
        server = cls((host, port), handler)
    except OSError as exc:
        where = host_port(host, port)
        raise ListenError(f"{exc} while attempting to bind on address {where} ({what})") from exc
    for name, value in attrs.items():
        setattr(server, name, value)
    return server


def bind_servers(engine: Engine) -> tuple[list[socketserver.BaseServer], Rendezvous | None]:
    """Binds every port this node owns before anything starts, like the real server."""
    s = engine.settings
    servers: list[socketserver.BaseServer] = []
    rendezvous = None
    try:
        if s.serves_http:
            routes = SGLANG_ROUTES if s.is_leader else HEALTH_ROUTES
            routes = VLLM_ROUTES if s.engine == "vllm" else routes
            servers.append(
                listen(
                    _ThreadingHTTPServer,
                    s.host,
                    s.port,
                    Handler,
                    "--host/--port",
                    engine=engine,
                    routes=routes,
                )
            )
        if s.mode == "prefill" and s.is_leader:
            servers.append(
                listen(
                    _ThreadingHTTPServer,
                    s.host,
                    s.bootstrap_port,
                    BootstrapHandler,
                    "--disaggregation-bootstrap-port",
                    engine=engine,
                )
            )
        if s.nnodes > 1 and s.is_leader:
            host, port = split_host_port(s.dist_init_addr or "")
            rendezvous = Rendezvous(engine)
            what = "--dist-init-addr: node rank 0 must own this address"
            servers.append(
                listen(
                    _RendezvousServer, host, port, RendezvousHandler, what, rendezvous=rendezvous
                )
            )
    except ListenError:
        for server in servers:
            server.server_close()
        raise
    return servers, rendezvous


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


def serve(settings: Settings, timing: Timing) -> int:
    engine = Engine(settings, timing)
    log(
        "Rehearsal engine {} ({}) argv: {}".format(VERSION, settings.engine, " ".join(sys.argv[1:]))
    )
    problem = preflight(settings)
    if problem:
        log(problem, "ERROR")
        return 1
    try:
        servers, rendezvous = bind_servers(engine)
    except ListenError as exc:
        log(str(exc), "ERROR")
        return 1
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Only a list append: a handler that took a lock (Event.set) could deadlock with the
        # main thread it interrupts inside Event.wait.
        signal.signal(signum, lambda number, frame: received.append(number))
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    if settings.serves_http:
        url = f"http://{host_port(settings.host, settings.port)}"
        if settings.engine == "vllm":
            log(f"Starting vLLM API server 0 on {url}")
        log(f"Uvicorn running on {url} (Press CTRL+C to quit)")
    if settings.mode == "prefill" and settings.is_leader:
        log(f"Bootstrap server listening on {host_port(settings.host, settings.bootstrap_port)}")
    if rendezvous is not None:
        log(f"Rendezvous listening on {settings.dist_init_addr} for {settings.nnodes - 1} node(s)")
    threading.Thread(target=startup, args=(engine, rendezvous), daemon=True).start()
    if timing.fail_after_seconds is not None:
        message = f"Simulated crash after {timing.fail_after_seconds} s (--fail-after-seconds)"
        timer = threading.Timer(timing.fail_after_seconds, engine.fail, args=(message,))
        timer.daemon = True
        timer.start()
    # A few wake-ups a second, not a busy poll: sixteen idle engines share one machine in a
    # rehearsal, and a failure elsewhere sets `stop` at once.
    while not received and not engine.stop.wait(0.2):
        pass
    if received:
        log(f"Received {signal.Signals(received[0]).name}; shutting down")
    engine.stop.set()
    if rendezvous is not None:
        rendezvous.close()
    rank0 = getattr(engine, "rank0_socket", None)
    if rank0 is not None:
        with contextlib.suppress(OSError):
            rank0.sendall(b"BYE\n")
    for server in servers:
        server.shutdown()
        server.server_close()
    log(f"Finished server process (exit status {engine.exit_code})")
    return engine.exit_code


def main(argv: list[str] | None = None) -> int:
    timing, settings = parse_command_line(sys.argv[1:] if argv is None else argv)
    return serve(settings, timing)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # daemon threads may be mid-stream; do not wait for them
