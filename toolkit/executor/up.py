"""`toolkit up`: carry a Plan out, phase by phase, every host in parallel.

Phases (one request each to every host's agent; one agent process per host serves them
all): prepare (no other run active, planned ports free, NIC present or detected) → tune
(governor, sysctls; read, compare, write; previous values recorded) → launch (owner-only
launch scripts, detached start in their own process group) → wait (/health on every node,
live view; a dead process is reported at once) → router (start, /readiness) → smoke
request. Nothing is changed on any host until every host has passed prepare; `check`
stops after showing what tune would change.
Before prepare, `toolkit check` runs on the same connections (unless skip_check): a ✘ stops.

READY means every node answered: a failed node or a lost host fails the run, and Ctrl-C or
SIGTERM in any phase stops what was started (`unwind`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.text import Text

from toolkit import rehearsal, shell
from toolkit.executor import containers, state
from toolkit.executor.cancel import Abandoned, Guard, Interrupted, signals
from toolkit.executor.check import CheckOptions, preflight
from toolkit.executor.cluster import Cluster, HostWork, file_op, host_work
from toolkit.executor.session import AgentFailed, Session, Unreachable
from toolkit.executor.unwind import StopAllOnFailure, UpFailed, abort_mark, on_failure, on_interrupt
from toolkit.plan import NodePlan, Plan
from toolkit.render.run import ReadinessView, Recap
from toolkit.render.scripts import ScriptOptions, node_script, process_script
from toolkit.roles import load_role, role_defaults
from toolkit.secrets import mask_argv, mask_env, mask_text

GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
POLL_S = 1.0
ROUTER_READY_TIMEOUT_S = 180.0
SMOKE_PROMPT = "Say READY."


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
                    run.phase,
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
        self.phase = "prepare"
        _prepare(cluster, plan, record, recap)
        if recap.failures():
            _fail(console, recap, "preflight failed: nothing was changed")
        self.phase = "container preflight"
        containers.preflight(  # pulls the images, unless in check mode
            cluster, plan, record.run_id, options.rehearse, recap, check=options.check
        )
        if recap.failures():
            _fail(console, recap, "container preflight failed: nothing was started")
        if options.check:
            _check_tuning(cluster, recap)
            console.print(recap.table())
            console.print("[cyan]check mode:[/] nothing was changed, nothing was started")
            return None
        resolved = _resolve_nics(plan, record)
        self.phase = "launch"
        state.save(record)  # before anything starts: `toolkit down --run ID` can find it
        # Not cut in half: the previous tuning values come back with the launch's results.
        with self.guard.deferred("the launch"):
            self.launched = True
            _tune_and_launch(cluster, plan, resolved, record, recap, options)
            state.save(record)
        if recap.failures():
            self.failed()
        self.phase = "readiness"
        timeout = _readiness_timeout(plan, options)
        if not _wait_nodes(cluster, resolved, record, recap, timeout, options, console):
            self.failed()
        self.phase = "router start"
        answer = _router_and_smoke(cluster, plan, record, recap, console)
        if answer is None:
            self.failed()
        console.print(recap.table())
        state.save(record)
        console.print(
            f"[bold green]READY[/] — {plan.endpoint.local_address}:{plan.endpoint.port} "
            f"on {plan.endpoint.host} answered: {answer!r}"
        )
        return record


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

    done = cluster.each(list(cluster.sessions), prepare, recap, phase="prepare")
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


def _tuners(cluster: Cluster) -> dict[str, str]:
    """One host per machine tunes it: several inventory hosts may share one kernel."""
    machines: dict[str, str] = {}
    for name, work in cluster.hosts.items():
        if work.serving:
            machines.setdefault(work.machine, name)
    return {host: machine for machine, host in machines.items()}


def _tune_ops(work: HostWork) -> list[dict[str, Any]]:
    tuning = work.nodes[0].tuning
    glob = role_defaults("cpu_tuning").get("governor_glob", GOVERNOR_GLOB)
    ops: list[dict[str, Any]] = []
    for task in load_role("cpu_tuning").tasks:  # the role's task list, in its order
        if task == "cpu_governor" and tuning.cpu_governor:
            ops.append({"op": "cpu_governor", "glob": glob, "value": tuning.cpu_governor})
        elif task == "sysctl":
            ops += [{"op": "sysctl", "key": k, "value": v} for k, v in tuning.sysctl.items()]
    # A failed tuning write stops that host's command before anything is started.
    return [{**op, "stop_on_failure": True} for op in ops]


def _check_tuning(cluster: Cluster, recap: Recap) -> None:
    def check(session: Session, work: HostWork) -> list[dict[str, Any]]:
        ops = _tune_ops(work)
        return session.agent(ops, check=True) if ops else []

    cluster.each(list(_tuners(cluster)), check, recap)


def _record_tuning(record: state.RunRecord, host: str, results: list[dict[str, Any]]) -> None:
    previous: dict[str, dict[str, str]] = {"governor": {}, "sysctl": {}}
    for item in results:
        if item["status"] != "changed":
            continue
        if item["task"] == "cpu_governor":
            previous["governor"].update(item.get("previous", {}))
        elif item["task"].startswith("sysctl "):
            previous["sysctl"][item["task"].removeprefix("sysctl ")] = item["before"]
    if previous["governor"] or previous["sysctl"]:
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


def _script_options(
    record: state.RunRecord, host: str, node: str, argv: list[str] | None
) -> ScriptOptions:
    return ScriptOptions(
        host_tag=host,
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


def _launch_ops(
    work: HostWork, plan: Plan, nodes: list[NodePlan], record: state.RunRecord, rehearse: bool
) -> list[dict[str, Any]]:
    """Upload the owner-only launch scripts (and the rehearsal engine), start each node."""
    run_dir = state.run_dir(work.workdir, record.run_id)
    files: list[tuple[str, str, str]] = []
    starts = []
    engine = f"{run_dir}/rehearsal/{rehearsal.ENGINE_ENTRY}"
    if rehearse and work.nodes:
        sources = rehearsal.engine_files().items()
        files += [(f"{run_dir}/rehearsal/{name}", text, "644") for name, text in sources]
    for node in (n for n in nodes if n.host == work.name):
        paths = state.node_files(work.workdir, record.run_id, node)
        argv = rehearsal_argv(plan, node, engine, plan.rehearsal) if rehearse else None
        options = _script_options(record, work.tag, node.name, argv)
        if node.container is not None:
            env_file = containers.env_file(work.workdir, record.run_id, node.name)
            options = containers.script_options(options, node, argv, env_file)
        script = node_script(plan, node, options)
        files.append((paths["script"], script, "700"))
        starts.append({"op": "start", "name": node.name, **paths})
    pointer = {"run_id": record.run_id, "run_dir": run_dir, "profile": plan.profile}
    files.append((f"{work.workdir}/active.json", json.dumps(pointer), "600"))
    files.append(_remote_record(work, record))
    return [{**file_op(files), "stop_on_failure": True}, *starts]


def _remote_record(work: HostWork, record: state.RunRecord) -> tuple[str, str, str]:
    """The run record kept on the host (secrets masked), read by `down -i` without state."""
    run_dir = state.run_dir(work.workdir, record.run_id)
    remote = {
        **json.loads(record.to_json()),
        "host": work.name,
        "run_dir": run_dir,
        "tuning": record.tuning.get(work.name, {}),
    }
    return (f"{run_dir}/run.json", json.dumps(remote, indent=2), "600")


def _tune_and_launch(
    cluster: Cluster,
    plan: Plan,
    nodes: list[NodePlan],
    record: state.RunRecord,
    recap: Recap,
    options: UpOptions,
) -> None:
    """One command per host: tune (the machine's first host), then write and start."""
    tuners = _tuners(cluster)

    def work_on(session: Session, work: HostWork) -> list[dict[str, Any]]:
        ops = _tune_ops(work) if work.name in tuners else []
        return session.agent(ops + _launch_ops(work, plan, nodes, record, options.rehearse))

    done = cluster.each(list(cluster.sessions), work_on, recap, phase="launch")
    for host, results in done.items():
        _record_tuning(record, host, results)


# ----------------------------------------------------------------------------- wait


def _target(
    name: str, bind: str | None, port: int, files: dict[str, str], path: str
) -> dict[str, Any]:
    local = "127.0.0.1" if bind in (None, "0.0.0.0", "::") else bind
    return {
        "name": name,
        "url": f"http://{_url_host(local)}:{port}{path}",
        "pidfile": files["pidfile"],
        "log": files["log"],
        "port": port,
        "bind": bind or "127.0.0.1",
    }


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _wait_nodes(
    cluster: Cluster,
    nodes: list[NodePlan],
    record: state.RunRecord,
    recap: Recap,
    timeout: float,
    options: UpOptions,
    console: Console,
) -> bool:
    """Each host polls its own nodes' /health and streams state changes (one command)."""
    path = role_defaults("sglang_server").get("health_path", "/health")
    targets: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        files = state.node_files(cluster.hosts[node.host].workdir, record.run_id, node)
        target = _target(node.name, node.bind, node.port, files, path)
        if "http" not in node.listen:
            # A vLLM headless engine serves no HTTP: ready while alive; its head's /health
            # turns 200 only once every engine has joined.
            target["url"] = None
        targets.setdefault(node.host, []).append(target)
    console.print(f"waiting for {len(nodes)} nodes (GET {path}, timeout {timeout:.0f} s)")
    abort = StopAllOnFailure(cluster, record, enabled=not options.keep_on_failure)
    with ReadinessView(console, [(n.name, n.host, n.role) for n in nodes]) as view:

        def on_progress(event: dict[str, Any]) -> None:
            view.update(event["name"], event["state"])
            if event["state"] == "failed":
                abort()

        def wait(session: Session, work: HostWork) -> list[dict[str, Any]]:
            op = {
                "op": "wait_http",
                "targets": targets[work.name],
                "timeout": timeout,
                "abort_mark": abort_mark(work, record),
            }
            # The host's run record now carries the tuning to restore (known since launch).
            record_op = file_op([_remote_record(work, record)])
            try:
                return session.agent([record_op, op], on_progress=on_progress)
            except (Unreachable, AgentFailed):
                abort()  # a node not confirmed ready fails the run: the others need not wait
                raise

        done = cluster.each(list(targets), wait, recap, quiet_ok=True, phase="readiness")
    # A host without an answer (lost, or its agent died) has nodes never confirmed ready.
    answered = set(done) == set(targets)
    return _report(done, {n.name: n for n in nodes}, console) and answered


def _report(done: dict[str, list[dict[str, Any]]], procs: dict[str, Any], console: Console) -> bool:
    """Show each failed process's command and log tail; True when everything is ready."""
    ok = len(done) > 0
    for host, results in done.items():
        for item in results:
            if item["status"] == "failed" and item["task"].startswith("ready "):
                ok = False
                name = item["task"].removeprefix("ready ")
                _show_failure(console, name, host, procs.get(name), item)
            elif item["status"] == "failed" or item["status"] == "skipped":
                ok = False
    return ok


def _show_failure(console: Console, name: str, host: str, node: Any, entry: dict[str, Any]) -> None:
    env = getattr(node, "env", {})
    argv = getattr(node, "argv", [])
    command = mask_text(shell.join(mask_argv(argv)), env) if argv else "(unknown)"
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


# ----------------------------------------------------------------------------- router


def _smoke_op(plan: Plan) -> dict[str, Any]:
    """One request through the endpoint (from the endpoint's own host)."""
    endpoint = plan.endpoint
    base = f"http://{_url_host(endpoint.local_address)}:{endpoint.port}"
    tokens = int(role_defaults("router").get("smoke_max_tokens", 8))
    prompt = str(role_defaults("router").get("smoke_prompt", "Say READY."))
    if plan.engine == "vllm":
        url = f"{base}/v1/completions"
        body: dict[str, Any] = {
            "model": _served_name(plan),
            "prompt": prompt,
            "max_tokens": tokens,
            "temperature": 0,
        }
    else:
        url = f"{base}/generate"
        body = {"text": prompt, "sampling_params": {"max_new_tokens": tokens, "temperature": 0}}
    return {"op": "http", "url": url, "method": "POST", "body": body, "timeout": 300}


def _router_and_smoke(
    cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap, console: Console
) -> str | None:
    """Router (PD): write, start, wait for /readiness, then the smoke request, all in one
    command on the router host. Mixed: the smoke request on the rank-0 host."""
    ops: list[dict[str, Any]] = []
    host = plan.endpoint.host
    if plan.router is not None:
        router = plan.router
        host = router.host
        work = cluster.hosts[router.host]
        files = state.process_files(work.workdir, record.run_id, "router")
        options = _script_options(record, work.tag, "router", None)
        script = process_script(plan, "router", router, options)
        path = role_defaults("router").get("readiness_path", "/readiness")
        target = _target("router", router.bind, router.listen["http"], files, path)
        ops += [
            {**file_op([(files["script"], script, "700")]), "stop_on_failure": True},
            {"op": "start", "name": "router", **files, "stop_on_failure": True},
            {
                "op": "wait_http",
                "targets": [target],
                "timeout": ROUTER_READY_TIMEOUT_S,
                "stop_on_failure": True,
            },
        ]
        console.print(f"starting the router on {host}; waiting for GET {path}")
    ops.append(_smoke_op(plan))
    done = cluster.each([host], lambda s, w: s.agent(ops), recap, phase="router start")
    if host not in done:
        return None
    results = done[host]
    if not _report({host: results}, {"router": plan.router}, console):
        return None
    smoke = next((r for r in results if r["task"] == "http"), None)
    if smoke is None or smoke["status"] != "ok":
        return None
    return _answer(plan, smoke, host, recap)


def _answer(plan: Plan, smoke: dict[str, Any], host: str, recap: Recap) -> str | None:
    from toolkit.render.run import TaskResult

    try:
        data = json.loads(smoke["body"])
    except ValueError:
        data = {}
    if plan.engine == "vllm":
        text = (data.get("choices") or [{}])[0].get("text")
    else:
        text = data.get("text")
    if not text:
        body = smoke["body"][:200]
        recap.add(TaskResult(host, "smoke request", "failed", f"empty answer: {body}"))
        return None
    return str(text).strip()


def _served_name(plan: Plan) -> str:
    argv = plan.nodes[0].argv
    if "--served-model-name" in argv:
        return argv[argv.index("--served-model-name") + 1]
    return plan.model_path
