"""`toolkit up`: run the `up` playbook (`playbooks/up.yaml`, or --playbook FILE) on a Plan.

Before the plays, `toolkit check` runs on the same connections (unless skip_check): a ✘
stops. Then each play in order, on its host group, every host in parallel, a host's tasks
in one request to its agent (`toolkit.playbook.engine`): as shipped, preflight (no other
run, ports free, NIC, container image; read-only) → prepare (tuning, the platform's env
and the profile's extra roles) → launch (scripts, detached start, wait for /health) →
router (start, /readiness, smoke request). `--check` runs every play in check mode:
each task says what it would do.

READY means every play passed on every host: a failed task or node or a lost host fails the
run, and Ctrl-C or SIGTERM in any phase stops what was started (`unwind`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from toolkit.executor import state
from toolkit.executor.cancel import Abandoned, Guard, Interrupted, signals
from toolkit.executor.check import CheckOptions, preflight
from toolkit.executor.cluster import Cluster, host_work
from toolkit.executor.unwind import UpFailed, on_failure, on_interrupt
from toolkit.plan import Plan
from toolkit.playbook.engine import play_roles, run_play
from toolkit.playbook.facts import group_hosts, host_vars, tuners
from toolkit.playbook.load import (
    Play,
    PlaybookError,
    Role,
    RoleSearch,
    load_playbook,
    playbook_path,
)
from toolkit.render.run import Recap
from toolkit.tasks import MODULES
from toolkit.tasks.base import HostCtx, RunCtx

__all__ = ["UpFailed", "UpOptions", "up"]


@dataclass(frozen=True)
class UpOptions:
    rehearse: bool = False
    check: bool = False
    accept_new_host_keys: bool = False
    keep_on_failure: bool = False
    timeout_s: float | None = None
    skip_check: bool = False
    translate_flags: bool = False
    collective: bool | None = None  # None: the profile's collective.by_default
    collective_backend: str | None = None
    playbook: Path | None = None  # None: the shipped playbooks/up.yaml
    roles_dirs: tuple[Path, ...] = ()
    skip_tags: frozenset[str] = frozenset()


def load_up_plays(plan: Plan, options: UpOptions) -> list[tuple[Play, list[Role]]]:
    """The up playbook's plays with their roles loaded (a bad role or task fails here,
    before any host is touched), the profile's extra roles appended to their play."""
    path = playbook_path(options.playbook or "up")
    plays = load_playbook(path, {"engine": plan.engine, "platform": plan.platform})
    ids = [p.id for p in plays]
    unknown = sorted(set(plan.plays) - set(ids))
    if unknown:
        raise PlaybookError(
            f"profile {plan.profile}: plays: {', '.join(unknown)} is not a play of {path} "
            f"(its plays: {', '.join(ids)})"
        )
    search = RoleSearch.from_env(options.roles_dirs)
    return [(p, play_roles(p, search, tuple(plan.plays.get(p.id, ())))) for p in plays]


def up(plan: Plan, options: UpOptions, console: Console) -> state.RunRecord | None:
    run_id = state.new_run_id(plan.profile)
    recap = Recap(console, check=options.check)
    hosts = host_work(plan)
    cluster = Cluster(hosts, console, options.accept_new_host_keys)
    record = state.RunRecord(
        run_id=run_id,
        plan=plan.to_dict(mask=True),
        rehearse=options.rehearse,
        started=time.time(),
    )
    mode = "rehearsal" if options.rehearse else "launch"
    console.rule(f"toolkit up {plan.profile} · run {run_id} · {mode} on {len(hosts)} hosts")
    run = _Run(cluster, plan, record, recap, options, console)
    try:
        with signals(console) as run.guard:
            try:
                return run.phases()
            except Abandoned:
                raise  # a second signal during a cleanup: already said what is left
            except Interrupted as exc:
                on_interrupt(
                    cluster,
                    run.plan,
                    record,
                    recap,
                    console,
                    run.guard,
                    run.where,
                    run.launched,
                    exc.signum,
                )
                raise
    finally:
        cluster.close()


class _Run:
    """One `up`: the phases in order, and where it got to (what Ctrl-C has to undo)."""

    def __init__(
        self,
        cluster: Cluster,
        plan: Plan,
        record: state.RunRecord,
        recap: Recap,
        options: UpOptions,
        console: Console,
    ) -> None:
        self.cluster, self.plan, self.record, self.recap = cluster, plan, record, recap
        self.options, self.console = options, console
        self.guard = Guard(console)
        self.phase = "connect"
        self.launched = False
        self.ctx: RunCtx | None = None

    @property
    def where(self) -> str:
        """The phase a Ctrl-C interrupts: the running wave's, once the plays began."""
        if self.ctx is not None and "phase" in self.ctx.shared:
            return str(self.ctx.shared["phase"])
        return self.phase

    def failed(self) -> None:
        on_failure(
            self.cluster,
            self.plan,
            self.record,
            self.recap,
            self.options.keep_on_failure,
            self.console,
            self.guard,
        )

    def phases(self) -> state.RunRecord | None:
        cluster, record, recap, options, console = (
            self.cluster,
            self.record,
            self.recap,
            self.options,
            self.console,
        )
        plays = load_up_plays(self.plan, options)
        if cluster.connect(recap):
            _fail(console, recap, "unreachable hosts: nothing was changed")
        if not options.skip_check:  # `toolkit check` first; a ✘ raises CheckFailed
            self.phase = "preflight"
            checks = CheckOptions(
                options.rehearse,
                options.translate_flags,
                collective=options.collective,
                collective_backend=options.collective_backend,
                launching=True,
            )
            self.plan = preflight(cluster, self.plan, checks, console)
            record.plan = self.plan.to_dict(mask=True)
        plan = self.plan
        self.ctx = RunCtx(
            cluster,
            plan,
            record,
            recap,
            console,
            check=options.check,
            rehearse=options.rehearse,
            keep_on_failure=options.keep_on_failure,
            readiness_timeout_s=_readiness_timeout(plan, options),
            guard=self.guard,
            skip_tags=options.skip_tags,
        )
        tuning_hosts = tuners(cluster)
        for play, roles in plays:
            self.phase = play.id
            hosts = {
                name: HostCtx(
                    name,
                    cluster.hosts[name],
                    cluster.sessions[name],
                    host_vars(
                        plan,
                        cluster.hosts[name],
                        record.run_id,
                        rehearse=options.rehearse,
                        check=options.check,
                        tunes_machine=name in tuning_hosts,
                    ),
                )
                for name in group_hosts(plan, play.hosts, cluster)
            }
            changes = any(not MODULES[t.module].readonly for r in roles for t in r.tasks)
            if changes and not self.launched and not options.check:
                state.save(record)  # before anything changes: `toolkit down --run ID` finds it
                self.launched = True
            outcome = run_play(play, roles, hosts, self.ctx)
            if self.launched:
                state.save(record)
            if outcome.failed:
                self._play_failed(play)
        console.print(recap.table())
        if options.check:
            console.print("[cyan]check mode:[/] nothing was changed, nothing was started")
            return None
        answer = self.ctx.shared.get("answer")
        console.print(
            f"[bold green]READY[/] — {plan.endpoint.local_address}:{plan.endpoint.port} "
            f"on {plan.endpoint.host} answered: {answer!r}"
        )
        return record

    def _play_failed(self, play: Play) -> None:
        where = self.ctx.shared.get("failed_phase", play.id) if self.ctx else play.id
        if self.options.check:
            _fail(self.console, self.recap, f"check mode: {where} would fail; nothing was changed")
        if self.launched:
            self.failed()
        _fail(self.console, self.recap, f"{where} failed: nothing was started, nothing was changed")


def _fail(console: Console, recap: Recap, message: str) -> None:
    console.print(recap.table())
    raise UpFailed(message)


def _readiness_timeout(plan: Plan, options: UpOptions) -> float:
    if options.timeout_s is not None:
        return options.timeout_s
    if options.rehearse:
        return float(plan.rehearsal["load_seconds"]) + 120.0
    return plan.readiness_timeout_s
