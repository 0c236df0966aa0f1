"""`toolkit down`: run the `down` playbook (`playbooks/down.yaml`) on a run's hosts.

As shipped: the router stops first, then every process of the run (verified gone, its
ports free), then the tuning `up` changed is restored, and each host's record of the run
and the files holding secrets are removed; the logs stay. Works from the local run record,
or from the record each host keeps (`<workdir>/active.json` → `<run dir>/run.json`, or
`<workdir>/runs/<id>/run.json` for a named run). Each run owns its records: a run's `down`
removes a host's `active.json` only when it names that run, so stopping an old run never
hides the live one. Idempotent: a second `down` finds nothing to stop and says so.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from rich.console import Console

from toolkit.executor import state
from toolkit.executor.cluster import Cluster, HostWork, host_work
from toolkit.executor.session import Session
from toolkit.host.protocol import Op, Result
from toolkit.inventory import Inventory
from toolkit.plan import Plan, plan_from_dict
from toolkit.planner import connection_of
from toolkit.playbook.engine import play_roles, run_play
from toolkit.playbook.facts import host_vars, in_group
from toolkit.playbook.load import RoleSearch, load_playbook, playbook_path
from toolkit.render.run import Recap, TaskResult
from toolkit.tasks.base import HostCtx, RunCtx


def stop_run(
    cluster: Cluster,
    plan: Plan,
    record: state.RunRecord,
    recap: Recap,
    restore_tuning: bool,
    grace: float | None = None,
) -> None:
    """Stop the run on every host still reachable (a lost one is reported, not waited on).
    `grace` overrides the roles' stop_grace_s (a failed `up` stops within seconds)."""
    run = RunCtx(cluster, plan, record, recap, cluster.console)
    if grace is not None:
        run.shared["grace"] = grace
    run.shared["keep_tuning"] = not restore_tuning
    hosts = {
        name: HostCtx(
            name, cluster.hosts[name], session, _vars(plan, cluster.hosts[name], record.run_id)
        )
        for name, session in cluster.sessions.items()
        if session.lost is None
    }
    _run_down(run, hosts, {name: plan for name in hosts})


def _vars(plan: Plan, work: HostWork, run_id: str) -> dict[str, Any]:
    return host_vars(plan, work, run_id, rehearse=False, check=False, tunes_machine=False)


def _run_down(run: RunCtx, hosts: dict[str, HostCtx], plans: dict[str, Plan]) -> None:
    """Each play of the down playbook on the hosts of its group (by each host's own plan).
    A failed play does not stop the next: `down` does all it can and reports the rest."""
    search = RoleSearch.from_env()
    engines = {p.engine for p in plans.values()}
    for engine in sorted(engines):
        mine = {n: h for n, h in hosts.items() if plans[n].engine == engine}
        platform = next(iter(plans[n].platform for n in mine))
        plays = load_playbook(playbook_path("down"), {"engine": engine, "platform": platform})
        for play in plays:
            group = {
                n: h
                for n, h in mine.items()
                if in_group(plans[n], play.hosts, h.work) and not h.session.lost
            }
            if group:
                run_play(play, play_roles(play, search), group, run)


def down_from_record(
    record: state.RunRecord, console: Console, keep_tuning: bool, accept_new: bool
) -> bool:
    plan = record.plan_obj
    recap = Recap(console)
    cluster = Cluster(host_work(plan), console, accept_new)
    console.rule(f"toolkit down · run {record.run_id}")
    try:
        cluster.connect(recap)
        stop_run(cluster, plan, record, recap, restore_tuning=not keep_tuning)
    finally:
        cluster.close()
    if not recap.failures():
        record.stopped = record.stopped or time.time()
        state.save(record, make_current=False)
    console.print(recap.table())
    return not recap.failures()


def down_from_hosts(
    inventory: Inventory,
    console: Console,
    keep_tuning: bool,
    accept_new: bool,
    run_id: str | None = None,
) -> bool:
    """From the hosts alone: each inventory host's active run (or the run named `run_id`,
    found by its record in the host's run directory) is stopped there."""
    hosts = {
        name: HostWork(name, connection_of(h), h.python, h.workdir)
        for name, h in inventory.hosts.items()
    }
    recap = Recap(console)
    cluster = Cluster(hosts, console, accept_new)
    which = f"run {run_id}" if run_id else "runs"
    console.rule(f"toolkit down · {which} recorded on the hosts of {inventory.path}")
    try:
        cluster.connect(recap)
        found = cluster.each(
            list(cluster.sessions), lambda s, w: _remote_record(s, w, run_id), recap, quiet_ok=True
        )
        contexts: dict[str, HostCtx] = {}
        plans: dict[str, Plan] = {}
        for name, results in found.items():
            remote = results[0].data.get("record")
            if not remote or not remote.get("plan"):
                what = f"run {run_id}" if run_id else "toolkit run"
                recap.add(TaskResult(name, "stop", "ok", f"no {what} recorded here"))
                continue
            plan = plan_from_dict(remote["plan"])
            work = host_work(plan).get(name, hosts[name])
            contexts[name] = HostCtx(
                name,
                work,
                cluster.sessions[name],
                _vars(plan, work, remote["run_id"]),
                plan=plan,
                run_id=remote["run_id"],
                tuning=None if keep_tuning else remote.get("tuning"),
            )
            plans[name] = plan
        if contexts:
            first = next(iter(contexts.values()))
            record = state.RunRecord(first.run_id, {}, False, time.time())
            run = RunCtx(cluster, plans[first.name], record, recap, console)
            run.shared["keep_tuning"] = keep_tuning
            _run_down(run, contexts, plans)
    finally:
        cluster.close()
    console.print(recap.table())
    return not recap.failures()


def _remote_record(session: Session, work: HostWork, run_id: str | None) -> list[Result]:
    """The host's record of its active run (or of `run_id`), in `data["record"]`."""
    if run_id is not None:
        path = f"{state.run_dir(work.workdir, run_id)}/run.json"
    else:
        found = session.agent([Op("read_file", {"path": f"{work.workdir}/active.json"})])[0]
        if found.status != "ok":
            return [Result("run record", "ok", "no active run")]
        path = f"{json.loads(_text(found))['run_dir']}/run.json"
    found = session.agent([Op("read_file", {"path": path})])[0]
    if found.status != "ok":
        return [Result("run record", "ok", "no record")]
    return [Result("run record", "ok", path, data={"record": json.loads(_text(found))})]


def _text(result: Result) -> str:
    return base64.b64decode(result.data["b64"]).decode()
