"""`toolkit check`: the preflight, every host in parallel, in a few seconds.

Rounds run at once on every host, each one request to the check's agent on the host (the
channel `up` uses, its own agent: as the login user, on python3 when the planned
interpreter is missing, with the check's modules; see `Session.agent(login=True)`):

1. probe: the `host_facts` module (`toolkit/host/probe.py`): the clock first (as a progress
   event), uid, `sudo -n true` (when become is set), then every fact;
2. flags: the static flag extractor run on one host per distinct engine build (cached
   locally by the probe's sha256 of `server_args.py`; its own SSH command), concurrently
   with
3. reachability (`toolkit/host/reach.py`): listeners on the targets (answering a nonce,
   `LISTENER_LIFETIME_S` at most), one dial request per source host (each connect bounded
   by `CONNECT_TIMEOUT_S`), then the listeners stopped;
4. judging, pure (`check_cluster.judge`), into a `CheckReport`.

`up` calls `preflight` on its already-open connections and refuses to launch on a ✘.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console

from toolkit.errors import ToolkitError
from toolkit.executor import check_remote as remote
from toolkit.executor import containers
from toolkit.executor.cluster import Cluster, HostWork, host_work
from toolkit.executor.collective import run_collectives
from toolkit.executor.session import AgentFailed, Session, Unreachable, parallel
from toolkit.host.protocol import Op, Result
from toolkit.plan import Plan
from toolkit.preflight import check_flags, gpu_facts
from toolkit.preflight.check_cluster import Context, judge
from toolkit.preflight.check_facts import CheckReport, Finding, HostFacts
from toolkit.preflight.check_plan import Route, node_model_path, routes
from toolkit.preflight.collective import backend_for
from toolkit.preflight.flags import EngineOptions
from toolkit.render.run import Recap

CONNECT_TIMEOUT_S = 2.0
LISTENER_LIFETIME_S = 30.0
MAX_MODEL_FILES = 5000


class CheckFailed(ToolkitError):
    """The preflight found a ✘; the table above says where and how to fix it."""


@dataclass(frozen=True)
class CheckOptions:
    rehearse: bool = False
    translate_flags: bool = False
    accept_new_host_keys: bool = False
    # --collective / --no-collective; None: as the profile's collective.by_default says.
    collective: bool | None = None
    collective_backend: str | None = None  # nccl, hccl, gloo; None/auto: by platform

    def run_collective(self, plan: Plan) -> bool:
        if self.collective is not None:
            return self.collective
        return bool((plan.collective or {}).get("by_default"))

    # `up`'s preflight: what only `toolkit bench` needs (the bench client) is not a ✘.
    launching: bool = False


def check(plan: Plan, options: CheckOptions) -> CheckReport:
    """Connect to every host of the plan, run every check, close."""
    cluster = Cluster(host_work(plan), Console(quiet=True), options.accept_new_host_keys)
    try:
        recap = Recap(Console(quiet=True))
        cluster.connect(recap)
        down = {r.host: r.msg for r in recap.results if r.status == "unreachable"}
        report = run_checks(cluster, plan, options, down)
        boxes = containers.check_findings(cluster, plan, options.rehearse)
        return replace(report, findings=report.findings + boxes) if boxes else report
    finally:
        cluster.close()


def preflight(cluster: Cluster, plan: Plan, options: CheckOptions, console: Console) -> Plan:
    """For `up`: check on open connections, print the table; the plan to launch, or raise."""
    from toolkit.render.check import render_check

    console.print("preflight: `toolkit check` on every host (skip with --skip-check)")
    report = run_checks(cluster, plan, options)
    render_check(report, console)
    if not report.ok:
        raise CheckFailed(
            "preflight check failed (✘ above): nothing was started; fix it, or pass "
            "--skip-check to launch anyway"
        )
    return report.plan


def run_checks(
    cluster: Cluster, plan: Plan, options: CheckOptions, unreachable: dict[str, str] | None = None
) -> CheckReport:
    started = time.monotonic()
    facts = gather_facts(cluster, plan, options.rehearse, unreachable or {})
    need_flags = options.translate_flags or not options.rehearse
    with ThreadPoolExecutor(max_workers=2) as pool:
        engine_job = pool.submit(engine_options, cluster, plan, facts) if need_flags else None
        reach = measure_routes(cluster, routes(plan), facts)
        found = engine_job.result() if engine_job else {}
    translations: dict[str, list[str]] = {}
    if options.translate_flags:
        usable = {h: o for h, o in found.items() if isinstance(o, EngineOptions)}
        plan, translations = check_flags.translate_plan(plan, usable)
    ctx = Context(
        plan=plan,
        hosts=cluster.hosts,
        facts=facts,
        rehearse=options.rehearse,
        options=found,
        reach=reach,
        translations=translations,
        launching=options.launching,
    )
    findings, collectives = judge(ctx) + device_findings(cluster, plan, facts, options), []
    if options.run_collective(plan):
        found, collectives = run_collectives(
            cluster, plan, facts, collective_backend(plan, options)
        )
        findings += found
    return CheckReport(
        profile=plan.profile,
        rehearse=options.rehearse,
        hosts=list(cluster.hosts),
        findings=findings,
        plan=plan,
        translated=options.translate_flags,
        elapsed_s=time.monotonic() - started,
        collective=collectives,
    )


def device_findings(
    cluster: Cluster, plan: Plan, facts: dict[str, HostFacts], options: CheckOptions
) -> list[Finding]:
    """The `devices` row: processes, free memory, ECC, persistence on the planned devices."""
    if options.rehearse:
        return []
    found = []
    for name, work in cluster.hosts.items():
        if work.serving and facts[name].ok:
            sections = {k: facts[name].section(k) for k in ("gpu_state", "gpu_apps", "npu_smi")}
            found.append(gpu_facts.devices(plan, work.nodes, name, sections))
    return [f for f in found if f is not None]


def collective_backend(plan: Plan, options: CheckOptions) -> str:
    return backend_for(plan.platform, options.collective_backend, options.rehearse)


# ----------------------------------------------------------------------------- probe


def probe_params(plan: Plan, work: HostWork, rehearse: bool) -> dict[str, Any]:
    serving = work.serving
    model = node_model_path(work.nodes[0], plan) if serving and not rehearse else None
    return {
        "model_dir": model,
        "max_files": MAX_MODEL_FILES,
        "disk_paths": [work.workdir, f"{work.workdir.rstrip('/')}/runs"],
        "files": list(dict.fromkeys(p for node in work.nodes for p in node.source)),
        "run_smi": serving and not rehearse,
    }


def gather_facts(
    cluster: Cluster, plan: Plan, rehearse: bool, unreachable: dict[str, str]
) -> dict[str, HostFacts]:
    facts = {
        name: HostFacts(name, unreachable=unreachable.get(name), python=work.python)
        for name, work in cluster.hosts.items()
    }
    names = [n for n in cluster.hosts if n in cluster.sessions and n not in unreachable]
    outcomes = parallel(
        names, lambda n: _probe(cluster.sessions[n], cluster.hosts[n], plan, rehearse, facts[n])
    )
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, Unreachable):
            facts[name].unreachable = str(outcome)
        elif isinstance(outcome, Exception):
            facts[name].probe_error = f"{type(outcome).__name__}: {outcome}"
    for name in cluster.hosts:
        if name not in cluster.sessions and facts[name].unreachable is None:
            facts[name].unreachable = "not connected"
    return facts


def _probe(session: Session, work: HostWork, plan: Plan, rehearse: bool, facts: HostFacts) -> None:
    params = {**probe_params(plan, work, rehearse), "sudo": session.sudo}
    facts.sudo_needed = session.sudo
    clock: list[float] = []

    def on_progress(event: dict[str, Any]) -> None:
        if "clock" in event and not clock:
            clock.extend([float(event["clock"]), time.time()])

    sent = time.time()
    try:
        results = session.agent(
            [Op("host_facts", params, name="probe")], login=True, on_progress=on_progress
        )
    except AgentFailed as exc:
        facts.probe_error = f"the probe failed on {work.name}: {exc}"
        return
    found = results[0] if results else Result("probe", "failed", "no result")
    if found.failed:
        facts.probe_error = f"the probe failed on {work.name}: {found.msg}"
        return
    facts.probe = found.data["facts"]
    facts.uid = found.data.get("uid")
    facts.sudo = found.data.get("sudo")
    facts.python_missing = bool(found.data.get("python_missing"))
    if clock:
        remote_now, arrived = clock
        facts.clock_offset = remote_now - (sent + arrived) / 2
        facts.clock_error = (arrived - sent) / 2


# ----------------------------------------------------------------------------- flags


def engine_options(
    cluster: Cluster, plan: Plan, facts: dict[str, HostFacts]
) -> dict[str, EngineOptions | str]:
    """Each serving host's engine flags (or why unknown), one extraction per engine build."""
    engine = plan.engine
    found: dict[str, EngineOptions | str] = {}
    groups: dict[str, list[str]] = {}
    for name, work in cluster.hosts.items():
        boxed = [n.container.image for n in work.nodes if n.container is not None]
        if boxed:  # the engine is in the image, not on the host
            found[name] = f"{engine} runs in the image {boxed[0]}; its flags are not read here"
            continue
        info = facts[name].package(engine) if work.serving and facts[name].ok else {}
        if not info.get("version") or not info.get("path"):
            if work.serving and facts[name].ok:
                found[name] = f"{engine} is not installed for {facts[name].python}"
            continue
        source = facts[name].section("sglang_source") or {}
        key = check_flags.cache_key(engine, info["version"], source.get("server_args_sha256"))
        groups.setdefault(key or f"host:{name}", []).append(name)
    todo = []
    for key, names in groups.items():
        hit = check_flags.cached(key)
        if hit is not None:
            found.update(dict.fromkeys(names, hit))
        else:
            todo.append(key)

    def extract(key: str) -> EngineOptions | str:
        first = groups[key][0]
        path = facts[first].package(engine)["path"]
        result = remote.extract_remote(
            cluster.sessions[first], facts[first].interpreter, engine, path
        )
        if isinstance(result, EngineOptions) and not key.startswith("host:"):
            check_flags.store(key, result)
        return result

    for key, outcome in zip(todo, parallel(todo, extract), strict=True):
        text = f"cannot read the flags: {outcome}" if isinstance(outcome, Exception) else outcome
        found.update(dict.fromkeys(groups[key], text))
    return found


# ----------------------------------------------------------------------------- reachability


def measure_routes(
    cluster: Cluster, wanted: list[Route], facts: dict[str, HostFacts]
) -> dict[str, dict[str, Any]]:
    """Listen on every target, connect from every source, stop the listeners."""
    outcomes: dict[str, dict[str, Any]] = {}
    live = []
    for route in wanted:
        down = [h for h in (route.source, route.target) if not facts[h].ok]
        if down:
            outcomes[route.key] = {"skipped": f"{down[0]} gave no facts (see ssh/python)"}
        else:
            live.append(route)
    specs: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for route in live:
        spec = specs.setdefault(route.target, {})
        if (route.bind, route.port) not in spec:
            spec[(route.bind, route.port)] = {
                "id": f"{route.bind}:{route.port}",
                "bind": route.bind,
                "port": route.port,
                "nonce": secrets.token_hex(8),
            }
    targets = list(specs)
    started = dict(
        zip(targets, parallel(targets, lambda t: _listen(cluster, t, specs[t])), strict=True)
    )
    try:
        dials = _connect_all(cluster, live, specs, started, outcomes)
    finally:
        stops = [(t, s.get("token")) for t, s in started.items() if isinstance(s, dict)]
        parallel(
            [item for item in stops if item[1]],
            lambda item: _agent(cluster, item[0], Op("reach_stop", {"token": item[1]})),
        )
    outcomes.update(dials)
    return outcomes


def _agent(cluster: Cluster, host: str, op: Op) -> Result:
    """One op on the host's check agent; its single result (a failed one says why)."""
    results = cluster.sessions[host].agent([op], login=True)
    return results[0] if results else Result(op.label, "failed", "no result")


def _listen(cluster: Cluster, target: str, spec: dict) -> dict:
    args = {"listen": list(spec.values()), "lifetime": LISTENER_LIFETIME_S}
    done = _agent(cluster, target, Op("reach_listen", {**args, "token": secrets.token_hex(8)}))
    if done.failed:
        return {"bound": [], "errors": {}, "failed": f"the listener did not start: {done.msg}"}
    return done.data


def _connect_all(
    cluster: Cluster,
    live: list[Route],
    specs: dict[str, dict],
    started: dict[str, Any],
    outcomes: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    by_source: dict[str, list[dict[str, Any]]] = {}
    for route in live:
        spec = specs[route.target][(route.bind, route.port)]
        listener = started.get(route.target)
        if isinstance(listener, Exception) or "failed" in listener:
            why = listener if isinstance(listener, Exception) else listener["failed"]
            outcomes[route.key] = {"skipped": f"no listener on {route.target}: {why}"}
        elif spec["id"] in listener.get("errors", {}):
            error = listener["errors"][spec["id"]]
            if "in use" in error:
                outcomes[route.key] = {"skipped": f"{error} (held: see ports)"}
            else:
                outcomes[route.key] = {"ok": False, "error": f"on {route.target}, {error}"}
        else:
            target = {"id": route.key, "address": route.address, "port": route.port}
            by_source.setdefault(route.source, []).append({**target, "nonce": spec["nonce"]})
    sources = list(by_source)

    def dial(source: str) -> dict[str, Any]:
        args = {"targets": by_source[source], "timeout": CONNECT_TIMEOUT_S}
        done = _agent(cluster, source, Op("reach_dial", args))
        if done.failed:
            raise RuntimeError(done.msg)
        return done.data

    results: dict[str, dict[str, Any]] = {}
    for source, outcome in zip(sources, parallel(sources, dial), strict=True):
        if isinstance(outcome, Exception):
            why = f"the connector failed on {source}: {outcome}"
            results.update({t["id"]: {"skipped": why} for t in by_source[source]})
        else:
            results.update(outcome)
    return results
