"""Judging hosts against each other, and the whole table: `judge`.

Pure (no SSH). The cross-host checks: the same engine version on every serving host, the
same model files everywhere, clocks within a second of each other, each host's flags
against its own engine, and the TCP paths measured between hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median_low
from typing import Any

from toolkit.plan import HostWork, Plan
from toolkit.preflight import check_rules as rules
from toolkit.preflight.check_facts import CHECKS, Finding, HostFacts, majority
from toolkit.preflight.check_plan import (
    Route,
    engine_args_start,
    node_model_path,
    routes,
    short_bytes,
)
from toolkit.preflight.flags import EngineOptions, check_argv, load_renames

MAX_SKEW_S = 1.0


@dataclass
class Context:
    plan: Plan
    hosts: dict[str, HostWork]
    facts: dict[str, HostFacts]
    rehearse: bool = False
    options: dict[str, EngineOptions | str] = field(default_factory=dict)  # str: why none
    reach: dict[str, dict[str, Any]] = field(default_factory=dict)  # Route.key → outcome
    translations: dict[str, list[str]] = field(default_factory=dict)  # node → changes
    launching: bool = False  # for `up`: the bench client is not needed yet


def judge(ctx: Context) -> list[Finding]:
    """Every applicable check on every host, in table order."""
    findings: list[Finding] = []
    for name, work in ctx.hosts.items():
        facts = ctx.facts[name]
        findings.append(rules.ssh(work, facts))
        if not facts.ok:
            if facts.unreachable is None:
                findings.append(rules.python(work, facts))
            continue
        findings += [f for f in _host_checks(ctx, work, facts) if f is not None]
    findings += engine_drift(ctx)
    findings += model_files(ctx)
    findings += clock(ctx)
    order = {name: i for i, name in enumerate(ctx.hosts)}
    columns = list(CHECKS)
    return sorted(findings, key=lambda f: (order[f.host], columns.index(f.check)))


def _host_checks(ctx: Context, work: HostWork, facts: HostFacts) -> list[Finding | None]:
    plan, rehearse = ctx.plan, ctx.rehearse
    out: list[Finding | None] = [rules.sudo(work, facts), rules.python(work, facts)]
    if work.router:
        out.append(rules.package(work, facts, "router", "sglang-router", "runs the router"))
    if work.bench:
        later = (
            "not installed; `up` does not need it, `toolkit bench` will" if ctx.launching else ""
        )
        out.append(rules.bench_client(plan, work, facts, later))
    if work.serving:
        out += [
            rules.accelerators(plan, work, facts, rehearse),
            rules.nic(work, facts),
            rules.env_files(work, facts, rehearse),
            flags(ctx, work),
        ]
    out += [rules.ports_free(plan, work, facts), rules.disk(work, facts), reach(ctx, work)]
    return out


def _serving(ctx: Context) -> list[str]:
    return [n for n, w in ctx.hosts.items() if w.serving and ctx.facts[n].ok]


def engine_drift(ctx: Context) -> list[Finding]:
    """The engine on each serving host, and ✘ on all of them when versions differ."""
    engine = ctx.plan.engine
    versions: dict[str, str] = {}
    out: list[Finding] = []
    for name in _serving(ctx):
        facts = ctx.facts[name]
        optional = "not installed; a rehearsal does not need it" if ctx.rehearse else ""
        boxed = [n.container.image for n in ctx.hosts[name].nodes if n.container is not None]
        if boxed:
            optional = f"not needed on the host: it runs in the image {boxed[0]}"
        why = "serves the model" if not ctx.rehearse else "the real launch needs it"
        finding = rules.package(ctx.hosts[name], facts, "engine", engine, why, optional)
        version = facts.package(engine).get("version")
        if version:
            versions[name] = version
        out.append(finding)
    if len(set(versions.values())) < 2:
        return out
    common = majority(list(versions.values()))
    listing = ", ".join(f"{host} → {version}" for host, version in versions.items())
    odd = [host for host, version in versions.items() if version != common]
    drifted = []
    for finding in out:
        version = versions.get(finding.host)
        if version is None:
            drifted.append(finding)
            continue
        summary = version if version == common else f"{version} ≠ {common}"
        drifted.append(
            Finding(
                finding.host,
                "engine",
                "failed",
                summary,
                f"{engine} versions differ between serving hosts: {listing}",
                f"install one version everywhere: pip install {engine}=={common} on "
                f"{', '.join(odd)}",
            )
        )
    return drifted


def _model_signature(section: dict[str, Any]) -> tuple:
    return (section.get("file_count"), section.get("total_bytes"), tuple(section.get("files", [])))


def model_files(ctx: Context) -> list[Finding]:
    """model_path on every serving host: present, not empty, the same files and bytes."""
    out: list[Finding] = []
    good: dict[str, dict[str, Any]] = {}
    for name in _serving(ctx):
        if ctx.rehearse:
            out.append(
                Finding(name, "model", "skipped", "rehearsal", "a rehearsal loads no weights")
            )
            continue
        path = node_model_path(ctx.hosts[name].nodes[0], ctx.plan)
        section = ctx.facts[name].section("model_dir") or {}
        problem = _model_problem(path, section)
        if problem:
            fix = (
                f"copy the weights to {path} on {name} (the same files as the other hosts), "
                "or set model_path for this host in the inventory"
            )
            out.append(Finding(name, "model", "failed", problem[0], f"{name}: {problem[1]}", fix))
        else:
            good[name] = section
    if not good:
        return out
    reference = majority([repr(_model_signature(s)) for s in good.values()])
    ref_host = next(h for h, s in good.items() if repr(_model_signature(s)) == reference)
    ref = good[ref_host]
    for name, section in good.items():
        size = f"{section['file_count']} files, {short_bytes(section['total_bytes'])}"
        where = f"{section['path']}: {size}"
        if repr(_model_signature(section)) == reference:
            out.append(Finding(name, "model", "ok", size, where))
            continue
        detail = f"{where}, unlike {ref_host} ({_model_diff(section, ref)})"
        fix = f"copy the missing or changed files from {ref_host} ({ref['path']})"
        out.append(Finding(name, "model", "failed", "differs", detail, fix))
    return out


def _model_problem(path: str, section: dict[str, Any]) -> tuple[str, str] | None:
    if "error" in section:
        return "unreadable", f"cannot read {path}: {section['error']}"
    if not section.get("exists"):
        return "missing", f"model_path {path} does not exist"
    if not section.get("is_dir"):
        return "not a dir", f"model_path {path} is not a directory"
    if not section.get("file_count"):
        return "empty", f"model_path {path} is empty"
    if section.get("broken_links"):
        count = section["broken_links"]
        return "broken links", f"{path} has {count} broken symlink{'s' * (count > 1)}"
    return None


def _model_diff(section: dict[str, Any], ref: dict[str, Any]) -> str:
    mine, theirs = set(section.get("files", [])), set(ref.get("files", []))
    parts = []
    if theirs - mine:
        parts.append(f"missing {', '.join(sorted(theirs - mine)[:3])}")
    if mine - theirs:
        parts.append(f"extra {', '.join(sorted(mine - theirs)[:3])}")
    if section["file_count"] != ref["file_count"]:
        parts.append(f"{section['file_count']} files vs {ref['file_count']}")
    if section["total_bytes"] != ref["total_bytes"]:
        parts.append(f"{section['total_bytes']} bytes vs {ref['total_bytes']}")
    return "; ".join(parts)


def clock(ctx: Context) -> list[Finding]:
    """Each host's clock against the median of all hosts (measured from here)."""
    offsets = {
        n: (f.clock_offset, f.clock_error or 0.0)
        for n, f in ctx.facts.items()
        if f.ok and f.clock_offset is not None
    }
    out = [
        Finding(n, "clock", "skipped", "unknown", "the host's `date +%s.%N` was unreadable")
        for n, f in ctx.facts.items()
        if f.ok and f.clock_offset is None
    ]
    if not offsets:
        return out
    middle = median_low(offset for offset, _ in offsets.values())
    for name, (offset, error) in offsets.items():
        skew = offset - middle
        text = f"{skew:+.2f} s"
        detail = f"{skew:+.3f} s from the hosts' median (±{error:.3f} s measurement)"
        if abs(skew) - error > MAX_SKEW_S:
            fix = "synchronize the clocks (chrony or systemd-timesyncd against one NTP server)"
            why = f"the clock is {skew:+.1f} s off the other hosts (more than {MAX_SKEW_S:g} s)"
            out.append(Finding(name, "clock", "failed", text, why, fix))
        else:
            out.append(Finding(name, "clock", "ok", text, detail))
    return out


def flags(ctx: Context, work: HostWork) -> Finding:
    host = work.name
    if ctx.rehearse:
        return Finding(host, "flags", "skipped", "rehearsal", "the stand-in engine takes any flag")
    options = ctx.options.get(host)
    if not isinstance(options, EngineOptions):
        return Finding(host, "flags", "skipped", "unknown", options or "no engine to check against")
    start = engine_args_start(ctx.plan)
    renames = load_renames()
    errors, notes, total = [], [], 0
    nodes = ctx.plan.nodes_on(host)  # translated when --translate-flags
    for node in nodes:
        findings = check_argv(node.argv[start:], options, renames)
        total += len(findings)
        errors += [(node.name, f) for f in findings if f.severity == "error"]
        notes += [f"{node.name}: {f.message}" for f in findings if f.severity == "warning"]
    notes += [f"{n.name}: translated {c}" for n in nodes for c in ctx.translations.get(n.name, [])]
    label = options.label
    if not errors:
        summary = f"{total} ok" + (f", {len(notes)} notes" if notes else "")
        return Finding(
            host, "flags", "ok", summary, f"every flag is accepted by {label}", notes=tuple(notes)
        )
    detail = "; ".join(f"{name}: {f.message}" for name, f in errors)
    known = all(f.kind in ("renamed", "removed") for _, f in errors)
    role = work.nodes[0].role
    fix = (
        "rerun with --translate-flags (rewrites these known renames), or fix the profile"
        if known
        else f"fix roles.{role}.args in the profile (--set roles.{role}.args.<flag>=null "
        "drops a flag)"
    )
    return Finding(host, "flags", "failed", f"{len(errors)} rejected", detail, fix, tuple(notes))


def reach(ctx: Context, work: HostWork) -> Finding | None:
    """The connections this host must open (as a source), from the measured outcomes."""
    mine: list[Route] = [r for r in routes(ctx.plan) if r.source == work.name]
    if not mine:
        return None
    failed, skipped = [], []
    for route in mine:
        outcome = ctx.reach.get(route.key) or {"skipped": "not measured"}
        if "skipped" in outcome:
            skipped.append(f"{_route_text(route)}: {outcome['skipped']}")
        elif not outcome.get("ok"):
            failed.append((route, f"{_route_text(route)}: {outcome.get('error')}"))
    host = work.name
    if failed:
        detail = "; ".join(text for _, text in failed)
        fix = "; ".join(dict.fromkeys(route.fix for route, _ in failed))
        return Finding(host, "reach", "failed", f"{len(failed)} blocked", detail, fix)
    if skipped and len(skipped) == len(mine):
        return Finding(host, "reach", "skipped", "not measured", "; ".join(skipped))
    ok = len(mine) - len(skipped)
    detail = f"{ok} connection{'s' * (ok != 1)} opened" + (
        f"; {'; '.join(skipped)}" if skipped else ""
    )
    return Finding(host, "reach", "ok", f"{ok} ok", detail)


def _route_text(route: Route) -> str:
    return f"{route.source} → {route.target} {route.address}:{route.port} ({route.purpose})"
