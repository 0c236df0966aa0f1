"""How `up`, `down` and friends report: task lines, a live readiness view, a recap.

Task lines follow Ansible's vocabulary (ok / changed / skipped / failed / unreachable, and
"would change" in check mode); the recap is one row per host.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from toolkit.host.protocol import Result

STATUSES = ("ok", "changed", "skipped", "failed", "unreachable")
STYLE = {
    "ok": "green",
    "changed": "yellow",
    "skipped": "cyan",
    "failed": "bold red",
    "unreachable": "bold red",
}


@dataclass
class TaskResult:
    host: str
    task: str
    status: str
    msg: str = ""
    before: Any = None
    after: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_agent(cls, host: str, result: Result) -> TaskResult:
        return cls(
            host,
            result.task,
            result.status,
            result.msg,
            result.before,
            result.after,
            dict(result.data),
        )


class Recap:
    """Every task result of a command, printed as it arrives and summed per host."""

    def __init__(self, console: Console, check: bool = False) -> None:
        self.console = console
        self.check = check
        self.results: list[TaskResult] = []
        self.lock = threading.Lock()

    def add(self, result: TaskResult, quiet: bool = False) -> TaskResult:
        with self.lock:
            self.results.append(result)
            if not quiet:
                self.console.print(self.line(result), highlight=False)
        return result

    def add_agent(self, host: str, results: list[Result], quiet_ok: bool = False) -> None:
        for raw in results:
            result = TaskResult.from_agent(host, raw)
            self.add(result, quiet=quiet_ok and result.status == "ok")

    def unreachable(self, host: str, msg: str) -> None:
        self.add(TaskResult(host=host, task="connect", status="unreachable", msg=msg))

    def line(self, r: TaskResult) -> str:
        label = "would change" if (self.check and r.status == "changed") else r.status
        change = ""
        if r.status == "changed" and (r.before is not None or r.after is not None):
            change = f": {_short(r.before)} → {_short(r.after)}"
        msg = f" — {r.msg}" if r.msg else ""
        text = escape(f"[{r.host}] {r.task}{change}{msg}")
        return f"[{STYLE[r.status]}]{label}[/]: {text}"

    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status in ("failed", "unreachable")]

    def table(self) -> Table:
        table = Table(title="recap", title_justify="left")
        table.add_column("host", style="bold")
        for status in STATUSES:
            table.add_column(status, justify="right", style=STYLE[status])
        hosts = list(dict.fromkeys(r.host for r in self.results))
        for host in hosts:
            counts = Counter(r.status for r in self.results if r.host == host)
            table.add_row(host, *(str(counts.get(s, 0)) for s in STATUSES))
        return table


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


class ReadinessView:
    """Per-process state (starting, loading, ready, failed) with elapsed time.

    A live table on a terminal; one line per state change otherwise (CI logs).
    """

    def __init__(self, console: Console, rows: list[tuple[str, str, str]]) -> None:
        self.console = console
        self.rows = rows  # (name, host, role)
        self.states = {name: "starting" for name, _, _ in rows}
        self.since = {name: time.monotonic() for name, _, _ in rows}
        self.started = time.monotonic()
        self.live: Live | None = None

    def __enter__(self) -> ReadinessView:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(None, None, None)

    def update(self, name: str, state: str) -> None:
        if self.states.get(name) == state:
            if self.live is not None:
                self.live.update(self._table())
            return
        self.states[name] = state
        self.since[name] = time.monotonic()
        if self.live is not None:
            self.live.update(self._table())
        else:
            elapsed = time.monotonic() - self.started
            color = {"ready": "green", "failed": "bold red"}.get(state, "yellow")
            self.console.print(f"  {name:<14} [{color}]{state:<8}[/] {elapsed:6.1f} s")

    def _table(self) -> Table:
        table = Table(title="readiness", title_justify="left")
        for column in ("process", "host", "role", "state", "elapsed"):
            table.add_column(column)
        now = time.monotonic()
        for name, host, role in self.rows:
            state = self.states[name]
            color = {"ready": "green", "failed": "bold red"}.get(state, "yellow")
            table.add_row(name, host, role, f"[{color}]{state}[/]", f"{now - self.started:.0f} s")
        return table
