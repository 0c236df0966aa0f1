"""The router role's modules: `router` (write its script, start it, wait for /readiness)
and `smoke` (one request through the endpoint, from the endpoint's own host)."""

from __future__ import annotations

import json
from typing import Any

from toolkit.executor import state
from toolkit.executor.cluster import file_op
from toolkit.host.protocol import Op, Result
from toolkit.plan import Plan
from toolkit.playbook.load import Task
from toolkit.render.run import TaskResult
from toolkit.render.scripts import process_script
from toolkit.tasks import report
from toolkit.tasks.base import ControllerModule, HostCtx, RunCtx, register, require, skipped
from toolkit.tasks.serving import script_options, target, url_host


@register
class Router(ControllerModule):
    name = "router"
    phase = "router start"
    deferred = True

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        require(args, task.where, "readiness_path", "interval_s", "timeout_s")
        router, work, record = run.plan.router, host.work, run.record
        if router is None or router.host != work.name:
            return skipped(task.name, "no router in this plan (mixed serving)")
        files = state.process_files(work.workdir, record.run_id, "router")
        options = script_options(record, work.tag, "router", None)
        script = process_script(run.plan, "router", router, options)
        path = str(args["readiness_path"])
        wait = {
            "targets": [target("router", router.bind, router.listen["http"], files, path)],
            "timeout": float(args["timeout_s"]),
            "interval": float(args["interval_s"]),
        }
        if not run.check:
            run.console.print(f"starting the router on {work.name}; waiting for GET {path}")
        return [
            file_op([(files["script"], script, "700")], name=task.name),
            Op("start", {"name": "router", **files}),
            Op("wait_http", wait),
        ]

    def after(self, run: RunCtx, done: dict[str, list[Result]], failed: bool) -> bool:
        return run.check or (
            report.show_failures(done, {"router": run.plan.router}, run.console) and not failed
        )


@register
class Smoke(ControllerModule):
    """One completion through the endpoint; its text is what `up` prints after READY."""

    name = "smoke"

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        require(args, task.where, "prompt", "max_tokens", "timeout_s")
        plan = run.plan
        if plan.endpoint.host != host.name:
            return skipped(task.name, "the endpoint is on " + plan.endpoint.host)
        base = f"http://{url_host(plan.endpoint.local_address)}:{plan.endpoint.port}"
        tokens, prompt = int(args["max_tokens"]), str(args["prompt"])
        if plan.engine == "vllm":
            url = f"{base}/v1/completions"
            body: dict[str, Any] = {
                "model": served_name(plan),
                "prompt": prompt,
                "max_tokens": tokens,
                "temperature": 0,
            }
        else:
            url = f"{base}/generate"
            body = {"text": prompt, "sampling_params": {"max_new_tokens": tokens, "temperature": 0}}
        timeout = float(args["timeout_s"])
        return [
            Op(
                "http",
                {"url": url, "method": "POST", "body": body, "timeout": timeout},
                name=task.name,
            )
        ]

    def absorb(self, host: HostCtx, results: list[Result], run: RunCtx) -> None:
        smoke = next((r for r in results if r.module == "http"), None)
        if smoke is None or smoke.status != "ok" or run.check:
            return
        try:
            data = json.loads(smoke.data["body"])
        except ValueError:
            data = {}
        if run.plan.engine == "vllm":
            text = (data.get("choices") or [{}])[0].get("text")
        else:
            text = data.get("text")
        if text:
            run.shared["answer"] = str(text).strip()
        else:
            body = smoke.data["body"][:200]
            run.recap.add(TaskResult(host.name, "smoke request", "failed", f"empty answer: {body}"))

    def after(self, run: RunCtx, done: dict[str, list[Result]], failed: bool) -> bool:
        return run.check or ("answer" in run.shared and not failed)


def served_name(plan: Plan) -> str:
    argv = plan.nodes[0].argv
    if "--served-model-name" in argv:
        return argv[argv.index("--served-model-name") + 1]
    return plan.model_path
