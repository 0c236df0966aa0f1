"""`toolkit down`: stop a run everywhere, verify, restore host tuning, keep the logs.

Works from the local run record, or from the record each host keeps (`<workdir>/active.json`
→ `<run dir>/run.json`, or `<workdir>/runs/<id>/run.json` for a named run). Each run owns
its records: a run's `down` removes a host's `active.json` only when it names that run, so
stopping an old run never hides the live one. The launch scripts go (they may hold secrets);
the logs stay. Idempotent: a second `down` finds nothing to stop and says so.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console

from toolkit.executor import containers, state
from toolkit.executor.cluster import Cluster, HostWork, host_work
from toolkit.executor.session import Session
from toolkit.host.protocol import Op, Result
from toolkit.inventory import Inventory
from toolkit.plan import Plan, plan_from_dict
from toolkit.planner import connection_of
from toolkit.render.run import Recap

STOP_GRACE_S = 20.0


def _stop_ops(
    work: HostWork,
    run_id: str,
    plan: Plan | None,
    tuning: dict[str, Any] | None,
    grace: float = STOP_GRACE_S,
) -> list[Op]:
    files = [state.node_files(work.workdir, run_id, n) for n in work.nodes]
    files.append(state.process_files(work.workdir, run_id, "router"))
    pidfiles = [f["pidfile"] for f in files]
    # Every port the run bound here (`Plan.listeners`, as check and up saw them free); a
    # run found on the hosts without its plan has none to wait for.
    ports = [port.arg() for port in plan.listeners(work.name)] if plan is not None else []
    stop = {
        "run_id": run_id,
        "host": work.tag,
        "grace": grace,
        "pidfiles": pidfiles,
        "ports": ports,
    }
    ops = [Op("stop", stop)]
    if tuning and (tuning.get("governor") or tuning.get("sysctl")):
        ops.append(Op("restore", dict(tuning)))
    ops.append(Op("release", {"path": f"{work.workdir}/active.json", "run_id": run_id}))
    # Launch scripts and container env files hold secrets: gone once the run is.
    secrets = [f["script"] for f in files] + containers.env_files(work, run_id)
    ops.append(Op("remove", {"paths": secrets}))
    return ops


def stop_run(
    cluster: Cluster,
    plan: Plan,
    record: state.RunRecord,
    recap: Recap,
    restore_tuning: bool,
    grace: float = STOP_GRACE_S,
) -> None:
    """Stop the run on every host still reachable (a lost one is reported, not waited on)."""

    def stop(session: Session, work: HostWork) -> list[Result]:
        tuning = record.tuning.get(work.name) if restore_tuning else None
        # Containers first (stop with grace, remove, by label), then the agent's stop
        # verifies that no process of the run is left and every planned port is free.
        stopped = containers.stop_results(session, work, record.run_id, grace)
        return stopped + session.agent(_stop_ops(work, record.run_id, plan, tuning, grace))

    cluster.each(list(cluster.sessions), stop, recap, quiet_ok=False, phase="stop")


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
        name: HostWork(
            name,
            connection_of(h),
            h.python,
            h.workdir,
        )
        for name, h in inventory.hosts.items()
    }
    recap = Recap(console)
    cluster = Cluster(hosts, console, accept_new)
    which = f"run {run_id}" if run_id else "runs"
    console.rule(f"toolkit down · {which} recorded on the hosts of {inventory.path}")
    try:
        cluster.connect(recap)

        def stop(session: Session, work: HostWork) -> list[Result]:
            pointer = _pointer(session, work, run_id)
            if pointer is None:
                what = f"run {run_id}" if run_id else "toolkit run"
                return [Result("stop", "ok", f"no {what} recorded here")]
            path = f"{pointer['run_dir']}/run.json"
            record = session.agent([Op("read_file", {"path": path})])[0]
            remote = json.loads(_b64(record.data["b64"])) if record.status == "ok" else {}
            plan = plan_from_dict(remote["plan"]) if remote.get("plan") else None
            if plan is not None:
                planned = host_work(plan).get(work.name)
                if planned is not None:
                    work = planned
            tuning = None if keep_tuning else remote.get("tuning")
            stopped = containers.stop_results(session, work, pointer["run_id"], STOP_GRACE_S)
            return stopped + session.agent(_stop_ops(work, pointer["run_id"], plan, tuning))

        cluster.each(list(cluster.sessions), stop, recap, phase="stop")
    finally:
        cluster.close()
    console.print(recap.table())
    return not recap.failures()


def _pointer(session: Session, work: HostWork, run_id: str | None) -> dict[str, Any] | None:
    """{run_id, run_dir} of the host's active run, or of `run_id` when its record is there."""
    if run_id is not None:
        run_dir = state.run_dir(work.workdir, run_id)
        found = session.agent([Op("read_file", {"path": f"{run_dir}/run.json"})])[0]
        return {"run_id": run_id, "run_dir": run_dir} if found.status == "ok" else None
    found = session.agent([Op("read_file", {"path": f"{work.workdir}/active.json"})])[0]
    if found.status != "ok":
        return None
    pointer: dict[str, Any] = json.loads(_b64(found.data["b64"]))
    return pointer


def _b64(text: str) -> str:
    import base64

    return base64.b64decode(text).decode()
