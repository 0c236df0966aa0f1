"""The simulated server: admission, one prefill lane, paced decode, and the PD KV hand-off.

Part of the rehearsal engine (`engine.py` is the entry point). Standard library only and
Python >= 3.8: these files are uploaded to hosts that have no toolkit installed, where they
import each other as plain modules from their own directory.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from typing import Callable, Iterator, NamedTuple  # noqa: UP035 (collections.abc is not subscriptable on 3.8)

if __package__:  # imported as toolkit.rehearsal.engine_core
    from .engine_settings import (
        FAKE_BOOTSTRAP_HOST,
        KV_WAIT_TIMEOUT_S,
        ROOM_TTL_S,
        WORDS,
        Settings,
        Timing,
        host_port,
        log,
    )
else:  # uploaded next to engine.py, whose directory is on sys.path
    from engine_settings import (  # type: ignore[no-redef]
        FAKE_BOOTSTRAP_HOST,
        KV_WAIT_TIMEOUT_S,
        ROOM_TTL_S,
        WORDS,
        Settings,
        Timing,
        host_port,
        log,
    )


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
