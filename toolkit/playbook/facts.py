"""What a task may use in `when:` and in templates: the facts of its host in this run,
and which hosts a play's `hosts:` group means."""

from __future__ import annotations

from typing import Any

from toolkit.executor import state
from toolkit.executor.cluster import Cluster, HostWork
from toolkit.plan import Plan
from toolkit.playbook.load import PlaybookError


def in_group(plan: Plan, group: str, work: HostWork) -> bool:
    """Whether a host belongs to a play's `hosts:` group in this plan."""
    if group == "all":
        return True
    if group == "serving":
        return bool(work.nodes)
    if group in ("prefill", "decode", "mixed"):
        return any(node.role == group for node in work.nodes)
    if group == "router":
        return plan.router is not None and plan.router.host == work.name
    if group == "endpoint":
        return plan.endpoint.host == work.name
    if group == "bench":
        return plan.bench.host == work.name
    raise PlaybookError(f"unknown host group {group!r}")


def group_hosts(plan: Plan, group: str, cluster: Cluster) -> list[str]:
    """The connected hosts of a group, in the cluster's order. A host whose connection was
    lost since stays in: the engine counts it as failed, so a play never passes without it."""
    return [name for name in cluster.sessions if in_group(plan, group, cluster.hosts[name])]


def tuners(cluster: Cluster) -> set[str]:
    """One host per machine tunes it: several inventory hosts may share one kernel."""
    machines: dict[str, str] = {}
    for name, work in cluster.hosts.items():
        if work.serving:
            machines.setdefault(work.machine, name)
    return set(machines.values())


def host_vars(
    plan: Plan,
    work: HostWork,
    run_id: str,
    *,
    rehearse: bool,
    check: bool,
    tunes_machine: bool,
) -> dict[str, Any]:
    """The facts of one host in a run (documented in roles/README.md)."""
    roles = sorted({n.role for n in work.nodes} | ({"router"} if work.router else set()))
    first = work.nodes[0] if work.nodes else None
    tuning = first.tuning if first is not None else None
    return {
        "profile": plan.profile,
        "engine": plan.engine,
        "platform": plan.platform,
        "pd": plan.router is not None,
        "model_path": plan.model_path,
        "host": work.name,
        "address": work.connection.address,
        "roles": roles,
        "role": roles[0] if roles else ("bench" if work.bench else ""),
        "serving": bool(work.nodes),
        "rehearse": rehearse,
        "check": check,
        "run_id": run_id,
        "workdir": work.workdir,
        "run_dir": state.run_dir(work.workdir, run_id),
        "python": work.python,
        "container": any(n.container is not None for n in work.nodes),
        "tunes_machine": tunes_machine,
        "tuning": {
            "cpu_governor": tuning.cpu_governor if tuning else None,
            "sysctl": dict(tuning.sysctl) if tuning else {},
        },
    }
