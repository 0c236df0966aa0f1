"""`toolkit down`: stop a run everywhere, verify, restore host tuning, keep the logs.

Works from the local run record, or, when that is lost, from the record each host keeps
(`<workdir>/active.json` → `<run dir>/run.json`). Idempotent: a second `down` finds nothing
to stop and says so.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console

from toolkit.executor import containers, state
from toolkit.executor.cluster import Cluster, HostWork, host_work
from toolkit.executor.session import Session
from toolkit.inventory import Inventory
from toolkit.plan import Plan, plan_from_dict
from toolkit.planner import connection_of
from toolkit.render.run import Recap

STOP_GRACE_S = 20.0


def _stop_ops(
    work: HostWork, run_id: str, plan: Plan | None, tuning: dict[str, Any] | None
) -> list[dict[str, Any]]:
    pidfiles = [state.node_files(work.workdir, run_id, n)["pidfile"] for n in work.nodes]
    pidfiles.append(state.process_files(work.workdir, run_id, "router")["pidfile"])
    ports = []
    for node in work.nodes:
        ports += [{"port": p, "bind": node.bind} for p in node.listen.values()]
    if plan is not None and plan.router is not None and work.router:
        ports.append({"port": plan.router.listen["http"], "bind": plan.router.bind})
    ops: list[dict[str, Any]] = [
        {
            "op": "stop",
            "run_id": run_id,
            "host": work.tag,
            "grace": STOP_GRACE_S,
            "pidfiles": pidfiles,
            "ports": ports,
        }
    ]
    if tuning and (tuning.get("governor") or tuning.get("sysctl")):
        ops.append({"op": "restore", **tuning})
    ops.append({"op": "remove", "paths": [f"{work.workdir}/active.json"]})
    return ops


def stop_run(
    cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap, restore_tuning: bool
) -> None:
    def stop(session: Session, work: HostWork) -> list[dict[str, Any]]:
        tuning = record.tuning.get(work.name) if restore_tuning else None
        # Containers first (stop with grace, remove, by label), then the agent's stop
        # verifies that no process of the run is left and every planned port is free.
        stopped = containers.stop_results(session, work, record.run_id, STOP_GRACE_S)
        return stopped + session.agent(_stop_ops(work, record.run_id, plan, tuning))

    cluster.each(list(cluster.sessions), stop, recap, quiet_ok=False)


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
        state.save(record)
    console.print(recap.table())
    return not recap.failures()


def down_from_hosts(
    inventory: Inventory, console: Console, keep_tuning: bool, accept_new: bool
) -> bool:
    """No local record: ask every inventory host which run it holds, and stop that."""
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
    console.rule(f"toolkit down · runs recorded on the hosts of {inventory.path}")
    try:
        cluster.connect(recap)

        def stop(session: Session, work: HostWork) -> list[dict[str, Any]]:
            found = session.agent([{"op": "read_file", "path": f"{work.workdir}/active.json"}])[0]
            if found["status"] != "ok":
                return [{"task": "stop", "status": "ok", "msg": "no toolkit run recorded here"}]
            pointer = json.loads(_b64(found["b64"]))
            record = session.agent([{"op": "read_file", "path": f"{pointer['run_dir']}/run.json"}])[
                0
            ]
            remote = json.loads(_b64(record["b64"])) if record["status"] == "ok" else {}
            plan = plan_from_dict(remote["plan"]) if remote.get("plan") else None
            if plan is not None:
                planned = host_work(plan).get(work.name)
                if planned is not None:
                    work = planned
            tuning = None if keep_tuning else remote.get("tuning")
            stopped = containers.stop_results(session, work, pointer["run_id"], STOP_GRACE_S)
            return stopped + session.agent(_stop_ops(work, pointer["run_id"], plan, tuning))

        cluster.each(list(cluster.sessions), stop, recap)
    finally:
        cluster.close()
    console.print(recap.table())
    return not recap.failures()


def _b64(text: str) -> str:
    import base64

    return base64.b64decode(text).decode()
