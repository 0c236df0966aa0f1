"""The serving roles' modules: the run's preflight on each host (`active_run`,
`ports_free`, `nic`, `container_image`), then `launch` (owner-only scripts, detached
start) and `wait_healthy` (every node's /health, with a live view)."""

from __future__ import annotations

import json
from typing import Any

from toolkit import rehearsal
from toolkit.executor import containers, state
from toolkit.executor.cluster import HostWork, file_op
from toolkit.host.protocol import Op, Result
from toolkit.plan import NodePlan, Plan
from toolkit.playbook.load import Task
from toolkit.render.run import ReadinessView
from toolkit.render.scripts import ScriptOptions, node_script
from toolkit.tasks import report
from toolkit.tasks.base import ControllerModule, HostCtx, RunCtx, register, require, skipped
from toolkit.tasks.teardown import StopAllOnFailure, abort_mark


@register
class ActiveRun(ControllerModule):
    name = "active_run"
    readonly = True

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        work = host.work
        return [Op(self.name, {"workdir": work.workdir, "host": work.tag}, stop_on_failure=False)]


@register
class PortsFree(ControllerModule):
    name = "ports_free"
    readonly = True

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        # The one planned-ports list (`Plan.listeners`), as `check` saw it and `down` frees it.
        ports = [port.arg() for port in run.plan.listeners(host.name)]
        return [Op(self.name, {"ports": ports}, stop_on_failure=False)]


@register
class Nic(ControllerModule):
    """The interface for the collective's NIC variables; detected results reach `launch`."""

    name = "nic"
    readonly = True

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        nodes = host.work.nodes
        if not nodes or not (nodes[0].nic or nodes[0].nic_env):
            return skipped(task.name, "no NIC variable to set on this host")
        return [Op(self.name, {"address": nodes[0].address, "nic": nodes[0].nic})]

    def absorb(self, host: HostCtx, results: list[Result], run: RunCtx) -> None:
        for item in results:
            if item.module == "nic" and item.data.get("nic"):
                for node in host.work.nodes:
                    run.record.nics[node.name] = item.data["nic"]


@register
class ContainerImage(ControllerModule):
    """Runtime present, image present or pulled, device access, leftovers of older runs:
    the container runtime's own CLI over the session."""

    name = "container_image"
    readonly = True
    phase = "container preflight"
    local = True

    def run_local(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Result]:
        if not containers.containers_of(host.work):
            return [skipped(task.name, "no container on this host")]
        return containers.probe_host(
            host.session,
            host.work,
            run.plan,
            run.record.run_id,
            run.rehearse,
            run.check,
            run.console,
        )


# ----------------------------------------------------------------------------- launch


def script_options(
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


def remote_record(work: HostWork, record: state.RunRecord) -> tuple[str, str, str]:
    """The run record kept on the host (secrets masked), read by `down -i` without state."""
    run_dir = state.run_dir(work.workdir, record.run_id)
    remote = {
        **json.loads(record.to_json()),
        "host": work.name,
        "run_dir": run_dir,
        "tuning": record.tuning.get(work.name, {}),
    }
    return (f"{run_dir}/run.json", json.dumps(remote, indent=2), "600")


@register
class Launch(ControllerModule):
    """Upload the owner-only launch scripts (and the rehearsal engine), start each node of
    this host detached, and record the run on the host."""

    name = "launch"
    phase = "launch"
    deferred = True

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        work, record, plan = host.work, run.record, run.plan
        nodes = [n for n in run.resolved_nodes() if n.host == work.name]
        if not nodes:
            return skipped(task.name, "no node on this host")
        run_dir = state.run_dir(work.workdir, record.run_id)
        files: list[tuple[str, str, str]] = []
        engine = f"{run_dir}/rehearsal/{rehearsal.ENGINE_ENTRY}"
        if run.rehearse:
            sources = rehearsal.engine_files().items()
            files += [(f"{run_dir}/rehearsal/{name}", text, "644") for name, text in sources]
        starts = []
        for node in nodes:
            paths = state.node_files(work.workdir, record.run_id, node)
            argv = rehearsal_argv(plan, node, engine, plan.rehearsal) if run.rehearse else None
            options = script_options(record, work.tag, node.name, argv)
            if node.container is not None:
                env_file = containers.env_file(work.workdir, record.run_id, node.name)
                options = containers.script_options(options, node, argv, env_file)
            files.append((paths["script"], node_script(plan, node, options), "700"))
            starts.append(Op("start", {"name": node.name, **paths}))
        pointer = {"run_id": record.run_id, "run_dir": run_dir, "profile": plan.profile}
        files.append((f"{work.workdir}/active.json", json.dumps(pointer), "600"))
        files.append(remote_record(work, record))
        return [file_op(files, name=task.name), *starts]


# ----------------------------------------------------------------------------- readiness


def target(
    name: str, bind: str | None, port: int, files: dict[str, str], path: str
) -> dict[str, Any]:
    local = "127.0.0.1" if bind in (None, "0.0.0.0", "::") else bind
    return {
        "name": name,
        "url": f"http://{url_host(local)}:{port}{path}",
        "pidfile": files["pidfile"],
        "log": files["log"],
        "port": port,
        "bind": bind or "127.0.0.1",
    }


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@register
class WaitHealthy(ControllerModule):
    """Each host polls its own nodes' health URL and streams state changes; a node that dies
    stops the whole run at once (unless --keep-on-failure)."""

    name = "wait_healthy"
    phase = "readiness"
    alone = True

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        require(args, task.where, "path", "interval_s", "log_tail_lines")
        work = host.work
        path = str(args["path"])
        targets = []
        for node in (n for n in run.resolved_nodes() if n.host == work.name):
            files = state.node_files(work.workdir, run.record.run_id, node)
            item = target(node.name, node.bind, node.port, files, path)
            if "http" not in node.listen:
                # A vLLM headless engine serves no HTTP: ready while alive; its head's
                # /health turns 200 only once every engine has joined.
                item["url"] = None
            targets.append(item)
        if not targets:
            return skipped(task.name, "no node on this host")
        wait = {
            "targets": targets,
            "timeout": float(args.get("timeout_s") or run.readiness_timeout_s),
            "interval": float(args["interval_s"]),
            "tail": int(args["log_tail_lines"]),
            "abort_mark": abort_mark(work, run.record),
        }
        # The host's run record now carries the tuning to restore (known since the launch).
        record = file_op([remote_record(work, run.record)], name="record the run")
        return [record, Op("wait_http", wait, name=task.name, stop_on_failure=False)]

    def before(self, run: RunCtx, hosts: dict[str, HostCtx]) -> None:
        if run.check:
            return
        nodes = [n for n in run.plan.nodes if n.host in hosts]
        run.console.print(
            f"waiting for {len(nodes)} nodes (timeout {run.readiness_timeout_s:.0f} s)"
        )
        view = ReadinessView(run.console, [(n.name, n.host, n.role) for n in nodes])
        run.shared["view"] = view.__enter__()
        run.shared["abort"] = StopAllOnFailure(
            run.cluster, run.record, enabled=not run.keep_on_failure
        )

    def progress(self, run: RunCtx, host: str, event: dict[str, Any]) -> None:
        view = run.shared.get("view")
        if view is not None and "name" in event:
            view.update(event["name"], event["state"])
            if event["state"] == "failed":
                run.shared["abort"]()

    def on_lost(self, run: RunCtx) -> None:
        """A node not confirmed ready fails the run: the other hosts need not wait."""
        if "abort" in run.shared:
            run.shared["abort"]()

    def after(self, run: RunCtx, done: dict[str, list[Result]], failed: bool) -> bool:
        view = run.shared.pop("view", None)
        if view is not None:
            view.__exit__(None, None, None)
        if run.check:
            return True
        nodes = {n.name: n for n in run.plan.nodes}
        return report.show_failures(done, nodes, run.console) and not failed
