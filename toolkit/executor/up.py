"""`toolkit up`: carry a Plan out, phase by phase, every host in parallel.

Phases (one agent command per host each): prepare (no other run active, planned ports
free, NIC present or detected) → tune (governor, sysctls; read, compare, write; previous
values recorded) → launch (owner-only launch scripts, detached start in their own process
group) → wait (/health on every node, live view; a dead process is reported at once) →
router (start, /readiness) → smoke request. Nothing is changed on any host until every
host has passed prepare; `check` stops after showing what tune would change.
Before prepare, `toolkit check` runs on the same connections (unless skip_check): a ✘ stops.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.check import CheckOptions, preflight
from toolkit.executor.cluster import Cluster, HostWork, file_op, host_work
from toolkit.executor.session import Session
from toolkit.plan import NodePlan, Plan
from toolkit.render.run import ReadinessView, Recap
from toolkit.render.scripts import ScriptOptions, node_script, process_script
from toolkit.roles import load_role, role_defaults
from toolkit.secrets import mask_env, mask_text

GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
ENGINE_FILE = Path(__file__).resolve().parent.parent / "rehearsal" / "engine.py"
POLL_S = 1.0
ROUTER_READY_TIMEOUT_S = 180.0
SMOKE_PROMPT = "Say READY."


class UpFailed(ToolkitError):
    """`up` stopped; the recap above says where and why."""


@dataclass(frozen=True)
class UpOptions:
    rehearse: bool = False
    check: bool = False
    accept_new_host_keys: bool = False
    keep_on_failure: bool = False
    timeout_s: float | None = None
    skip_check: bool = False
    translate_flags: bool = False


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
    try:
        if cluster.connect(recap):
            _fail(console, recap, "unreachable hosts: nothing was changed")
        if not options.skip_check:  # `toolkit check` first; a ✘ raises CheckFailed
            checks = CheckOptions(options.rehearse, options.translate_flags)
            plan = preflight(cluster, plan, checks, console)
            record.plan = plan.to_dict(mask=True)
        _prepare(cluster, plan, record, recap)
        if recap.failures():
            _fail(console, recap, "preflight failed: nothing was changed")
        _tune(cluster, record, recap, options.check)
        if options.check:
            console.print(recap.table())
            console.print("[cyan]check mode:[/] nothing was changed, nothing was started")
            return None
        if recap.failures():
            _fail(console, recap, "host tuning failed: nothing was started")
        resolved = _resolve_nics(plan, record)
        _launch(cluster, plan, resolved, record, recap, options)
        state.save(record)
        timeout = _readiness_timeout(plan, options)
        if not _wait_nodes(cluster, resolved, record, recap, timeout, console):
            _on_failure(cluster, plan, record, recap, options, console)
        if plan.router is not None:
            _start_router(cluster, plan, record, recap)
            if not _wait_router(cluster, plan, record, recap, console):
                _on_failure(cluster, plan, record, recap, options, console)
        answer = _smoke(cluster, plan, recap)
        if answer is None:
            _on_failure(cluster, plan, record, recap, options, console)
        console.print(recap.table())
        state.save(record)
        console.print(
            f"[bold green]READY[/] — {plan.endpoint.local_address}:{plan.endpoint.port} "
            f"on {plan.endpoint.host} answered: {answer!r}"
        )
        return record
    finally:
        cluster.close()


def _fail(console: Console, recap: Recap, message: str) -> None:
    console.print(recap.table())
    raise UpFailed(message)


def _readiness_timeout(plan: Plan, options: UpOptions) -> float:
    if options.timeout_s is not None:
        return options.timeout_s
    if options.rehearse:
        return float(plan.rehearsal["load_seconds"]) + 120.0
    return plan.readiness_timeout_s


# ----------------------------------------------------------------------------- prepare


def _listeners(work: HostWork, plan: Plan) -> list[dict[str, Any]]:
    ports = [
        {"port": port, "bind": node.bind, "purpose": f"{node.name} {purpose}"}
        for node in work.nodes
        for purpose, port in node.listen.items()
    ]
    if work.router and plan.router is not None:
        for purpose, port in plan.router.listen.items():
            bind = plan.router.bind if purpose == "http" else "0.0.0.0"
            ports.append({"port": port, "bind": bind, "purpose": f"router {purpose}"})
    return ports


def _prepare(cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap) -> None:
    def prepare(session: Session, work: HostWork) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = [
            {"op": "active_run", "workdir": work.workdir, "host": work.tag},
            {"op": "ports_free", "ports": _listeners(work, plan)},
        ]
        if work.nodes and (work.nodes[0].nic or work.nodes[0].nic_env):
            ops.append({"op": "nic", "address": work.nodes[0].address, "nic": work.nodes[0].nic})
        return session.agent(ops)

    done = cluster.each(list(cluster.sessions), prepare, recap)
    for host, results in done.items():
        for item in results:
            if item["task"] == "nic" and item.get("nic"):
                for node in cluster.hosts[host].nodes:
                    record.nics[node.name] = item["nic"]


def _resolve_nics(plan: Plan, record: state.RunRecord) -> list[NodePlan]:
    """Nodes with the detected interface filled into their NIC variables."""
    resolved = []
    for node in plan.nodes:
        nic = record.nics.get(node.name)
        if node.nic_env and nic:
            env = {**node.env, **{name: nic for name in node.nic_env}}
            node = replace(node, env=env, nic=nic, nic_env=[])
        resolved.append(node)
    return resolved


# ----------------------------------------------------------------------------- tune


def _tune(cluster: Cluster, record: state.RunRecord, recap: Recap, check: bool) -> None:
    def tune(session: Session, work: HostWork) -> list[dict[str, Any]]:
        tuning = work.nodes[0].tuning
        glob = role_defaults("cpu_tuning").get("governor_glob", GOVERNOR_GLOB)
        ops: list[dict[str, Any]] = []
        for task in load_role("cpu_tuning").tasks:  # the role's task list, in its order
            if task == "cpu_governor" and tuning.cpu_governor:
                ops.append({"op": "cpu_governor", "glob": glob, "value": tuning.cpu_governor})
            elif task == "sysctl":
                ops += [{"op": "sysctl", "key": k, "value": v} for k, v in tuning.sysctl.items()]
        return session.agent(ops, check=check) if ops else []

    # One kernel, one tuning: several inventory hosts may be one machine (local rehearsal).
    machines: dict[str, str] = {}
    for name, work in cluster.hosts.items():
        if work.serving:
            machines.setdefault(work.machine, name)
    done = cluster.each(list(machines.values()), tune, recap)
    if check:
        return
    for host, results in done.items():
        previous: dict[str, dict[str, str]] = {"governor": {}, "sysctl": {}}
        for item in results:
            if item["status"] != "changed":
                continue
            if item["task"] == "cpu_governor":
                previous["governor"].update(item.get("previous", {}))
            elif item["task"].startswith("sysctl "):
                previous["sysctl"][item["task"].removeprefix("sysctl ")] = item["before"]
        record.tuning[host] = previous


# ----------------------------------------------------------------------------- launch


def rehearsal_argv(
    plan: Plan, node: NodePlan, engine_path: str, timing: dict[str, Any]
) -> list[str]:
    """The simulated engine, given the node's real engine flags after `--`."""
    argv = [node.python, engine_path]
    if plan.engine == "vllm":
        argv += ["--engine", "vllm"]
    for key, value in timing.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return [*argv, "--", *node.argv[3:]]


def _script_options(record: state.RunRecord, host: str, node: str, argv: list[str] | None):
    return ScriptOptions(
        include_tuning=False,
        inline_secrets=True,
        run_id=record.run_id,
        extra_env=(
            ("TOOLKIT_RUN_ID", record.run_id),
            ("TOOLKIT_HOST", host),
            ("TOOLKIT_NODE", node),
        ),
        argv=tuple(argv) if argv is not None else None,
        optional_sources=record.rehearse,
    )


def _launch(
    cluster: Cluster,
    plan: Plan,
    nodes: list[NodePlan],
    record: state.RunRecord,
    recap: Recap,
    options: UpOptions,
) -> None:
    def launch(session: Session, work: HostWork) -> list[dict[str, Any]]:
        run_dir = state.run_dir(work.workdir, record.run_id)
        files: list[tuple[str, str, str]] = []
        starts = []
        engine = f"{run_dir}/engine.py"
        if options.rehearse and work.nodes:
            files.append((engine, ENGINE_FILE.read_text(), "644"))
        for node in (n for n in nodes if n.host == work.name):
            paths = state.node_files(work.workdir, record.run_id, node)
            argv = rehearsal_argv(plan, node, engine, plan.rehearsal) if options.rehearse else None
            script = node_script(plan, node, _script_options(record, work.tag, node.name, argv))
            files.append((paths["script"], script, "700"))
            starts.append({"op": "start", "name": node.name, **paths})
        remote = {
            **json.loads(record.to_json()),
            "host": work.name,
            "run_dir": run_dir,
            "tuning": record.tuning.get(work.name, {}),
        }
        files.append((f"{run_dir}/run.json", json.dumps(remote, indent=2), "600"))
        pointer = {"run_id": record.run_id, "run_dir": run_dir, "profile": plan.profile}
        files.append((f"{work.workdir}/active.json", json.dumps(pointer), "600"))
        return session.agent([file_op(files), *starts], check=False)

    cluster.each(list(cluster.sessions), launch, recap)
    if recap.failures():
        raise UpFailed("launch failed")


# ----------------------------------------------------------------------------- wait


def _target(node: NodePlan, workdir: str, run_id: str, path: str) -> dict[str, Any]:
    local = "127.0.0.1" if node.bind in ("0.0.0.0", "::") else node.bind
    files = state.node_files(workdir, run_id, node)
    return {
        "name": node.name,
        "url": f"http://{_url_host(local)}:{node.port}{path}",
        "pidfile": files["pidfile"],
        "log": files["log"],
        "port": node.port,
        "bind": node.bind,
    }


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _poll(
    cluster: Cluster,
    targets: dict[str, list[dict[str, Any]]],
    view: ReadinessView,
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """Probe every host's targets each second until all are ready, one fails, or timeout."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    while True:
        outcomes = cluster_probe(cluster, targets)
        for name, entry in outcomes.items():
            view.update(name, entry["state"])
            final[name] = entry
        states = [e["state"] for e in final.values()]
        if "failed" in states or all(s == "ready" for s in states):
            return final
        if time.monotonic() > deadline:
            for entry in final.values():
                if entry["state"] != "ready":
                    entry["timeout"] = True
            return final
        time.sleep(POLL_S)


def cluster_probe(
    cluster: Cluster, targets: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    from toolkit.executor.session import parallel

    hosts = list(targets)
    outcomes = parallel(
        hosts, lambda h: cluster.sessions[h].agent([{"op": "probe", "targets": targets[h]}])
    )
    merged: dict[str, dict[str, Any]] = {}
    for host, outcome in zip(hosts, outcomes, strict=True):
        if isinstance(outcome, Exception):
            for t in targets[host]:
                merged[t["name"]] = {"state": "failed", "host": host, "error": str(outcome)}
            continue
        for name, entry in outcome[0]["states"].items():
            merged[name] = {**entry, "host": host}
    return merged


def _wait_nodes(
    cluster: Cluster,
    nodes: list[NodePlan],
    record: state.RunRecord,
    recap: Recap,
    timeout: float,
    console: Console,
) -> bool:
    path = role_defaults("sglang_server").get("health_path", "/health")
    targets: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        workdir = cluster.hosts[node.host].workdir
        targets.setdefault(node.host, []).append(_target(node, workdir, record.run_id, path))
    rows = [(n.name, n.host, n.role) for n in nodes]
    console.print(f"waiting for {len(nodes)} nodes (GET {path}, timeout {timeout:.0f} s)")
    with ReadinessView(console, rows) as view:
        final = _poll(cluster, targets, view, timeout)
    return _report_wait(final, {n.name: n for n in nodes}, recap, console, timeout)


def _report_wait(
    final: dict[str, dict[str, Any]],
    nodes: dict[str, Any],
    recap: Recap,
    console: Console,
    timeout: float,
) -> bool:
    from toolkit.render.run import TaskResult

    ok = True
    for name, entry in final.items():
        host = entry["host"]
        state_now = entry["state"]
        if state_now == "ready":
            recap.add(TaskResult(host, f"ready {name}", "ok"), quiet=True)
            continue
        ok = False
        if entry.get("timeout"):
            msg = f"not ready after {timeout:.0f} s (still {state_now})"
        elif entry.get("error"):
            msg = entry["error"]
        elif state_now == "failed":
            rc = entry.get("rc")
            msg = f"process exited{' with status ' + str(rc) if rc else ''}"
        else:
            recap.add(TaskResult(host, f"ready {name}", "skipped", f"still {state_now}"))
            continue
        recap.add(TaskResult(host, f"ready {name}", "failed", msg))
        _show_failure(console, name, host, nodes.get(name), entry)
    return ok


def _show_failure(console: Console, name: str, host: str, node: Any, entry: dict[str, Any]) -> None:
    env = getattr(node, "env", {})
    argv = getattr(node, "argv", [])
    command = mask_text(shlex.join(argv), env) if argv else "(unknown)"
    console.rule(f"[bold red]{name} on {host} failed[/]")
    console.print(Text("command: ", style="bold") + Text(command), highlight=False)
    if env:
        masked = mask_env(env)
        console.print(
            "[bold]env:[/] " + " ".join(f"{k}={v}" for k, v in masked.items()), highlight=False
        )
    lines = entry.get("log_tail") or []
    if lines:
        console.print(f"[bold]last {len(lines)} log lines:[/]")
        console.print(mask_text("\n".join(lines), env), highlight=False, markup=False)


def _on_failure(
    cluster: Cluster,
    plan: Plan,
    record: state.RunRecord,
    recap: Recap,
    options: UpOptions,
    console: Console,
) -> None:
    if options.keep_on_failure:
        state.save(record)
        console.print(recap.table())
        raise UpFailed(
            f"run {record.run_id} failed; processes kept (--keep-on-failure): inspect with "
            "`toolkit status` / `toolkit logs`, stop with `toolkit down`"
        )
    from toolkit.executor.down import stop_run

    console.print("[yellow]stopping every node of the run[/]")
    stop_run(cluster, plan, record, recap, restore_tuning=True)
    state.forget_current(record.run_id)
    console.print(recap.table())
    raise UpFailed(f"run {record.run_id} failed and was stopped")


# ----------------------------------------------------------------------------- router


def _start_router(cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap) -> None:
    router = plan.router
    assert router is not None
    work = cluster.hosts[router.host]
    paths = state.process_files(work.workdir, record.run_id, "router")
    script = process_script(
        plan, "router", router, _script_options(record, work.tag, "router", None)
    )
    ops = [file_op([(paths["script"], script, "700")]), {"op": "start", "name": "router", **paths}]
    cluster.each([router.host], lambda s, w: s.agent(ops), recap)


def _wait_router(
    cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap, console: Console
) -> bool:
    router = plan.router
    assert router is not None
    work = cluster.hosts[router.host]
    paths = state.process_files(work.workdir, record.run_id, "router")
    path = role_defaults("router").get("readiness_path", "/readiness")
    local = "127.0.0.1" if router.bind in ("127.0.0.1", "0.0.0.0", "::", None) else router.bind
    target = {
        "name": "router",
        "url": f"http://{_url_host(local)}:{router.listen['http']}{path}",
        "pidfile": paths["pidfile"],
        "log": paths["log"],
        "port": router.listen["http"],
        "bind": router.bind,
    }
    console.print(f"waiting for the router (GET {path}: a prefill and a decode worker registered)")
    with ReadinessView(console, [("router", router.host, "router")]) as view:
        final = _poll(cluster, {router.host: [target]}, view, ROUTER_READY_TIMEOUT_S)
    return _report_wait(final, {"router": router}, recap, console, ROUTER_READY_TIMEOUT_S)


def _smoke(cluster: Cluster, plan: Plan, recap: Recap) -> str | None:
    """One request through the endpoint; the answer must be non-empty."""
    endpoint = plan.endpoint
    base = f"http://{_url_host(endpoint.local_address)}:{endpoint.port}"
    defaults = role_defaults("router")
    tokens = int(defaults.get("smoke_max_tokens", 8))
    if plan.engine == "vllm":
        model = _served_name(plan)
        url, body = (
            f"{base}/v1/completions",
            {
                "model": model,
                "prompt": SMOKE_PROMPT,
                "max_tokens": tokens,
                "temperature": 0,
            },
        )
    else:
        url, body = (
            f"{base}/generate",
            {
                "text": SMOKE_PROMPT,
                "sampling_params": {"max_new_tokens": tokens, "temperature": 0},
            },
        )
    op = {"op": "http", "url": url, "method": "POST", "body": body, "timeout": 300}
    done = cluster.each([endpoint.host], lambda s, w: s.agent([op]), recap, quiet_ok=True)
    results = done.get(endpoint.host) or []
    if not results or results[0]["status"] != "ok":
        return None
    try:
        data = json.loads(results[0]["body"])
    except ValueError:
        data = {}
    text = (
        data.get("text") if plan.engine != "vllm" else (data.get("choices") or [{}])[0].get("text")
    )
    if not text:
        from toolkit.render.run import TaskResult

        recap.add(
            TaskResult(
                endpoint.host,
                "smoke request",
                "failed",
                f"empty answer: {results[0]['body'][:200]}",
            )
        )
        return None
    return str(text).strip()


def _served_name(plan: Plan) -> str:
    argv = plan.nodes[0].argv
    if "--served-model-name" in argv:
        return argv[argv.index("--served-model-name") + 1]
    return plan.model_path
