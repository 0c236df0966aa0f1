"""`down`'s modules: stop the router, stop the servers and their containers (verifying no
process is left and the planned ports are free), restore the tuning `up` changed, release
the host's pointer to the run and remove the files that hold secrets."""

from __future__ import annotations

import threading
from typing import Any

from toolkit.executor import containers, state
from toolkit.executor.cluster import Cluster, HostWork
from toolkit.executor.session import Session, parallel
from toolkit.host.protocol import Op, Result
from toolkit.plan import Plan
from toolkit.playbook.load import Task
from toolkit.tasks.base import (
    ControllerModule,
    HostCtx,
    RunCtx,
    TaskError,
    register,
    require,
    skipped,
)

ABORT_GRACE_S = 5.0  # a failed run's nodes: SIGKILL after this long


def stop_args(
    work: HostWork, run_id: str, plan: Plan | None, which: str, grace: float
) -> dict[str, Any]:
    """The agent's stop request: `router` stops only the router's session; `run` every
    process of the run on this host (the nodes, and anything of the run still left)."""
    node_files = [state.node_files(work.workdir, run_id, n) for n in work.nodes]
    router_files = state.process_files(work.workdir, run_id, "router")
    # The ports the run bound here (`Plan.listeners`, as check and up saw them free); a run
    # found on the hosts without its plan has none to wait for.
    planned = plan.listeners(work.name) if plan is not None else []
    if which == "router":
        ports = [p.arg() for p in planned if p.purpose.startswith("router ")]
        pidfiles = [router_files["pidfile"]]
    else:
        ports = [p.arg() for p in planned]
        pidfiles = [f["pidfile"] for f in node_files] + [router_files["pidfile"]]
    return {
        "run_id": run_id,
        "host": work.tag,
        "grace": grace,
        "pidfiles": pidfiles,
        "ports": ports,
        "only_pidfiles": which == "router",
    }


def _run_id(host: HostCtx, run: RunCtx) -> str:
    return host.run_id or run.record.run_id


@register
class Stop(ControllerModule):
    name = "stop"

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        which = str(args.get("which", "run"))
        if which not in ("router", "run"):
            raise TaskError(f"{task.where}: which must be router or run, not {which!r}")
        plan = host.plan if host.plan is not None else run.plan
        require(args, task.where, "grace_s")
        grace = float(run.shared.get("grace", args["grace_s"]))
        stop = stop_args(host.work, _run_id(host, run), plan, which, grace)
        return [Op(self.name, stop, name=task.name)]


@register
class ContainerStop(ControllerModule):
    """Stop (with grace) and remove the run's containers on this host, verified by label."""

    name = "container_stop"
    local = True

    def run_local(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Result]:
        if not containers.containers_of(host.work):
            return []
        require(args, task.where, "grace_s")
        grace = float(run.shared.get("grace", args["grace_s"]))
        return containers.stop_results(host.session, host.work, _run_id(host, run), grace)


@register
class RestoreTuning(ControllerModule):
    name = "restore_tuning"

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        if run.shared.get("keep_tuning"):
            return skipped(task.name, "--keep-tuning")
        tuning = host.tuning if host.plan is not None else run.record.tuning.get(host.name)
        if not tuning or not (tuning.get("governor") or tuning.get("sysctl")):
            return skipped(task.name, "up changed no tuning here")
        return [Op("restore", dict(tuning), name=task.name)]


@register
class Release(ControllerModule):
    name = "release"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        path = f"{host.work.workdir}/active.json"
        return [Op(self.name, {"path": path, "run_id": _run_id(host, run)}, name=task.name)]


@register
class RemoveSecrets(ControllerModule):
    """Launch scripts and container env files hold secrets: gone once the run is."""

    name = "remove_secrets"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        work, run_id = host.work, _run_id(host, run)
        files = [state.node_files(work.workdir, run_id, n) for n in work.nodes]
        files.append(state.process_files(work.workdir, run_id, "router"))
        paths = [f["script"] for f in files] + containers.env_files(work, run_id)
        return [Op("remove", {"paths": paths}, name=task.name)]


class StopAllOnFailure:
    """Stops every node of the run as soon as one fails or its host is lost (unless
    --keep-on-failure), so the other hosts' waits end at once instead of at the timeout."""

    def __init__(self, cluster: Cluster, record: state.RunRecord, enabled: bool) -> None:
        self.cluster, self.record, self.enabled = cluster, record, enabled
        self.lock = threading.Lock()
        self.fired = False

    def __call__(self) -> None:
        with self.lock:
            if self.fired or not self.enabled:
                return
            self.fired = True
        threading.Thread(target=self._kill, daemon=True).start()

    def _kill(self) -> None:
        def kill(session: Session) -> Any:
            work = self.cluster.hosts[session.name]
            args = stop_args(work, self.record.run_id, None, "run", ABORT_GRACE_S)
            # Ports are checked by the `down` that follows; the mark tells the host's own
            # readiness wait that its nodes were stopped on purpose.
            args.update(ports=[], mark=abort_mark(work, self.record))
            return session.agent([Op("stop", args)])

        parallel([self.cluster.sessions[n] for n in self.cluster.reachable], kill)


def abort_mark(work: HostWork, record: state.RunRecord) -> str:
    return f"{state.run_dir(work.workdir, record.run_id)}/.stopping"
