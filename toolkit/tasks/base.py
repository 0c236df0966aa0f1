"""The control-side half of a module: turn a task's arguments into agent `Op`s for one host,
and read the results back into the run.

Each module is registered by name (the key a task uses in `tasks/main.yaml`). Most just
validate their arguments and pass them on (`command`, `copy`, `sysctl`, …); the engine's
own (`launch`, `wait_healthy`, `router`, `smoke`, `stop`, …) fill theirs from the plan. A
module's result handling (`absorb`) is how a play feeds the next: the detected NIC reaches
the launch scripts, the tuning changed at `up` is what `down` restores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.cancel import Guard
from toolkit.executor.cluster import Cluster, HostWork
from toolkit.executor.session import Session
from toolkit.host.protocol import Op, Result
from toolkit.plan import NodePlan, Plan
from toolkit.playbook.load import Task
from toolkit.render.run import Recap


class TaskError(ToolkitError):
    """A task's arguments are wrong; the message names the task and the fix."""


@dataclass
class RunCtx:
    """What a play's modules share: the run, its hosts, and what earlier plays found."""

    cluster: Cluster
    plan: Plan
    record: state.RunRecord
    recap: Recap
    console: Console
    check: bool = False
    rehearse: bool = False
    keep_on_failure: bool = False
    readiness_timeout_s: float = 600.0
    guard: Guard | None = None
    skip_tags: frozenset[str] = frozenset()  # tasks with one of these tags do not run
    # Filled as plays run: the smoke request's answer, the readiness view, ...
    shared: dict[str, Any] = field(default_factory=dict)

    def resolved_nodes(self) -> list[NodePlan]:
        """Nodes with the NIC detected at preflight filled into their NIC variables."""
        out = []
        for node in self.plan.nodes:
            nic = self.record.nics.get(node.name)
            if node.nic_env and nic:
                env = {**node.env, **{name: nic for name in node.nic_env}}
                node = replace(node, env=env, nic=nic, nic_env=[])
            out.append(node)
        return out


@dataclass
class HostCtx:
    """One host of a play: its work, its session, and the values its tasks may use."""

    name: str
    work: HostWork
    session: Session
    vars: dict[str, Any]
    # `down` from the hosts' own records: each host may belong to a different run.
    plan: Plan | None = None
    run_id: str = ""
    tuning: dict[str, Any] | None = None


class ControllerModule:
    """Subclass, set `name`, and override `ops` (or `run_local` with `local = True`)."""

    name = ""
    alone = False  # its request travels alone: a long wait the user may interrupt
    deferred = False  # Ctrl-C waits for its request to end: it starts processes
    local = False  # runs from the control machine over the session (container CLIs)
    readonly = False  # changes nothing a `down` would undo (a preflight look)
    # What `up` calls the wave this module runs in ("interrupted during readiness").
    phase = ""

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        """The agent ops for this host, or a Result saying why there is nothing to do."""
        return [Op(self.name, dict(args))]

    def run_local(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Result]:
        raise NotImplementedError

    def absorb(self, host: HostCtx, results: list[Result], run: RunCtx) -> None:
        """Read this module's results back (their `module` is this module's name)."""

    def before(self, run: RunCtx, hosts: dict[str, HostCtx]) -> None:
        """Once per play, before any host's request (a live view opens here)."""

    def progress(self, run: RunCtx, host: str, event: dict[str, Any]) -> None:
        """A progress event the host side streamed."""

    def after(self, run: RunCtx, done: dict[str, list[Result]], failed: bool) -> bool:
        """Once per play, after every host answered; False fails the play."""
        return True


MODULES: dict[str, ControllerModule] = {}


def register(cls: type[ControllerModule]) -> type[ControllerModule]:
    if cls.name in MODULES:
        raise ValueError(f"module {cls.name} registered twice")
    MODULES[cls.name] = cls()
    return cls


def require(args: dict[str, Any], where: str, *keys: str) -> None:
    missing = [k for k in keys if k not in args or args[k] in (None, "")]
    if missing:
        raise TaskError(f"{where}: missing argument(s) {', '.join(missing)}")


def skipped(task: str, why: str) -> Result:
    return Result(task, "skipped", why)
