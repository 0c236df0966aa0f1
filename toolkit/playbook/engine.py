"""Running a play: its roles' tasks for each host of its group, every host in parallel.

A host's tasks in a play go to its agent as one request, in order; a failed task ends that
host's request (Ansible's rule), and a failed or lost host fails the play. A module marked
`alone` (a long wait the user may interrupt) gets a request of its own, and one marked
`local` runs from here over the session; so a play is a few waves, each wave one request
per host. Ctrl-C inside a wave of a `deferred` module (one that starts processes) takes
effect when the wave ends, so every started process is known to the unwinding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.executor.session import AgentFailed, Session, Unreachable
from toolkit.host.protocol import Op, Result
from toolkit.playbook.load import (
    Play,
    Role,
    RoleRef,
    RoleSearch,
    Task,
    evaluate,
    render_value,
)
from toolkit.render.run import TaskResult
from toolkit.tasks import MODULES
from toolkit.tasks.base import ControllerModule, HostCtx, RunCtx


@dataclass
class Step:
    """One request to one host's agent, or one local module."""

    items: list[tuple[Task, ControllerModule, list[Op]]] = field(default_factory=list)
    local: tuple[Task, ControllerModule, dict[str, Any]] | None = None

    @property
    def modules(self) -> list[ControllerModule]:
        if self.local is not None:
            return [self.local[1]]
        return list({id(m): m for _, m, _ in self.items}.values())

    @property
    def ops(self) -> list[Op]:
        return [op for _, _, ops in self.items for op in ops]


@dataclass
class PlayOutcome:
    results: dict[str, list[Result]]
    failed: bool


def play_roles(play: Play, search: RoleSearch, extra: tuple[str, ...] = ()) -> list[Role]:
    """The play's roles, then the ones a profile or the CLI adds to it (user roles)."""
    refs = (*play.roles, *(RoleRef(name) for name in extra))
    return [search.role(ref, frozenset(MODULES)) for ref in refs]


def compile_host(roles: list[Role], host: HostCtx, run: RunCtx) -> tuple[list[Step], list[Result]]:
    """A host's steps for a play, and the results known without asking it (skips)."""
    steps: list[Step] = []
    known: list[Result] = []
    for role in roles:
        for task in role.tasks:
            values = {**role.defaults, **host.vars}
            skip = sorted(set(task.tags) & run.skip_tags)
            if skip:
                known.append(Result(task.name, "skipped", f"--skip-tags {', '.join(skip)}"))
                continue
            if task.when is not None and not evaluate(task.when, values, task.where):
                known.append(Result(task.name, "skipped", f"when: {task.when}"))
                continue
            args = render_value(task.args, values, task.where)
            module = MODULES[task.module]
            if module.local:
                steps.append(Step(local=(task, module, args)))
                continue
            out = module.ops(task, args, host, run)
            if isinstance(out, Result):
                known.append(out)
                continue
            if len(out) == 1 and not out[0].name:
                out = [Op(out[0].module, out[0].args, task.name, out[0].stop_on_failure)]
            last = steps[-1] if steps else None
            if module.alone or last is None or last.local is not None or _alone(last):
                steps.append(Step())
            steps[-1].items.append((task, module, out))
    return steps, known


def _alone(step: Step) -> bool:
    return any(m.alone for m in step.modules)


def run_play(
    play: Play,
    roles: list[Role],
    hosts: dict[str, HostCtx],
    run: RunCtx,
) -> PlayOutcome:
    compiled = {name: compile_host(roles, host, run) for name, host in hosts.items()}
    for name, (_, known) in compiled.items():
        for item in known:
            run.recap.add(TaskResult(name, item.task, item.status, item.msg), quiet=True)
    done: dict[str, list[Result]] = {name: list(known) for name, (_, known) in compiled.items()}
    failed: set[str] = set()
    started: list[ControllerModule] = []  # `before` runs just ahead of a module's first wave
    verdicts = []
    try:
        waves = max((len(steps) for steps, _ in compiled.values()), default=0)
        for wave in range(waves):
            names = [n for n in hosts if wave < len(compiled[n][0]) and n not in failed]
            step_of = {n: compiled[n][0][wave] for n in names}
            # The phase first: a Ctrl-C right after `before` prints must name this wave.
            phases = [m.phase for s in step_of.values() for m in s.modules if m.phase]
            run.shared["phase"] = phases[0] if phases else play.id
            for module in {id(m): m for st in step_of.values() for m in st.modules}.values():
                if module not in started:
                    started.append(module)
                    module.before(run, hosts)
            _wave(run, hosts, step_of, done, failed)
    finally:
        for module in started:
            verdicts.append(module.after(run, done, bool(failed)))
    lost = [n for n in hosts if run.cluster.sessions[n].lost]
    return PlayOutcome(done, bool(failed or lost) or not all(verdicts))


def _wave(
    run: RunCtx,
    hosts: dict[str, HostCtx],
    step_of: dict[str, Step],
    done: dict[str, list[Result]],
    failed: set[str],
) -> None:
    def work(session: Session, _: Any) -> list[Result]:
        host = hosts[session.name]
        step = step_of[session.name]
        if step.local is not None:
            task, module, args = step.local
            return module.run_local(task, args, host, run)
        on_progress = _progress(run, host.name, step.modules)
        try:
            return session.agent(step.ops, check=run.check, on_progress=on_progress)
        except (Unreachable, AgentFailed):
            for module in step.modules:
                lost = getattr(module, "on_lost", None)
                if lost is not None:
                    lost(run)
            raise

    deferred = any(m.deferred for s in step_of.values() for m in s.modules) and not run.check
    quiet = any(_alone(s) for s in step_of.values())
    guard = run.guard.deferred("the launch") if deferred and run.guard else contextlib.nullcontext()
    with guard:
        answered = run.cluster.each(
            list(step_of), work, run.recap, quiet_ok=quiet, phase=run.shared["phase"]
        )
    for name, step in step_of.items():
        if name not in answered:
            failed.add(name)
            run.shared.setdefault("failed_phase", run.shared["phase"])
            continue
        results = answered[name]
        done[name] += results
        for module in step.modules:
            module.absorb(hosts[name], results, run)
        if any(r.failed for r in results):
            failed.add(name)
    if failed:
        run.shared.setdefault("failed_phase", run.shared["phase"])


def _progress(
    run: RunCtx, host: str, modules: list[ControllerModule]
) -> Callable[[dict[str, Any]], None]:
    def on_progress(event: dict[str, Any]) -> None:
        for module in modules:
            module.progress(run, host, event)

    return on_progress
