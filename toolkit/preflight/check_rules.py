"""Judging one host's facts: each check reads facts, compares with the plan, says why.

Pure (no SSH): every function takes the plan, the host's `HostWork` and `HostFacts`, and
returns a `Finding` (✔ ok, ✘ failed with the reason and the fix, – skipped with why) or
None where the check does not apply to the host (no router here, nothing to source).
Checks that compare hosts with each other live in `check_cluster.py`.
"""

from __future__ import annotations

from typing import Any

from toolkit.bench.clients import CLIENTS, choose_client, missing_client_fix
from toolkit.host.facts import detect_nic, port_holders
from toolkit.plan import HCCL_PURPOSE, HostWork, Listener, Plan
from toolkit.preflight.accelerators import compare_with_need, parse_npu_smi, parse_nvidia_smi
from toolkit.preflight.check_facts import Finding, HostFacts
from toolkit.preflight.check_plan import cards_per_node, is_ip, short_bytes

MIN_FREE_BYTES = 1 << 30  # logs and launch scripts; a long run's logs fit easily
_TOOLS = {
    "ascend": ("npu-smi", "npu_smi", parse_npu_smi),
    "cuda": ("nvidia-smi", "nvidia_smi", parse_nvidia_smi),
}


def ssh(work: HostWork, facts: HostFacts) -> Finding:
    conn = work.connection
    where = (
        "local"
        if conn.local
        else f"{conn.user + '@' if conn.user else ''}{conn.address}:{conn.port}"
    )
    if facts.unreachable:
        return Finding(work.name, "ssh", "failed", "unreachable", facts.unreachable)
    return Finding(work.name, "ssh", "ok", "local" if conn.local else "ok", where)


def sudo(work: HostWork, facts: HostFacts) -> Finding:
    host = work.name
    tuning = work.serving and not work.nodes[0].tuning.empty
    if facts.sudo_needed:
        if facts.sudo == "ok":
            return Finding(host, "sudo", "ok", "sudo -n", "passwordless sudo works")
        user = work.connection.user or "the login user"
        return Finding(
            host,
            "sudo",
            "failed",
            "sudo refused",
            f"ansible_become is set but `sudo -n true` failed: {facts.sudo}",
            f"let {user} run sudo without a password (NOPASSWD in /etc/sudoers.d), or log in "
            "as root",
        )
    if facts.uid == 0:
        return Finding(host, "sudo", "ok", "root", "logged in as root: no sudo needed")
    if tuning:
        return Finding(
            host,
            "sudo",
            "failed",
            "not root",
            f"tuning writes /proc/sys and cpufreq, but {host} runs as uid {facts.uid} "
            "without ansible_become",
            "set ansible_become: true for this host (passwordless sudo), or log in as root",
        )
    return Finding(host, "sudo", "skipped", "not needed", "no tuning on this host, no become")


def python(work: HostWork, facts: HostFacts) -> Finding:
    host = work.name
    fix = "install it, or set python (ansible_python_interpreter) for this host in the inventory"
    if facts.python_missing:
        why = f"{facts.python} was not found on {host} (the other checks ran on python3)"
        return Finding(host, "python", "failed", "missing", why, fix)
    if facts.probe is None:
        return Finding(host, "python", "failed", "failed", facts.probe_error or "no facts", fix)
    info = facts.section("python") or {}
    detail = f"{info.get('executable')} (Python {info.get('version')})"
    return Finding(host, "python", "ok", str(info.get("version")), detail)


def package(
    work: HostWork, facts: HostFacts, check: str, dist: str, why: str, optional: str = ""
) -> Finding:
    """Is `dist` installed for the host's python? `optional`: skip (with this reason) if not."""
    host = work.name
    if facts.python_missing:
        return Finding(host, check, "skipped", "no python", f"{facts.python} is missing")
    version = facts.package(dist).get("version")
    if version:
        return Finding(host, check, "ok", version, f"{dist} {version} ({why})")
    if optional:
        return Finding(host, check, "skipped", "not installed", f"{dist}: {optional}")
    return Finding(
        host,
        check,
        "failed",
        "not installed",
        f"{dist} is not installed for {facts.python} on {host} ({why})",
        f"pip install {dist} with {facts.python} on {host}, or set python for this host to "
        "the interpreter that has it",
    )


def accelerators(plan: Plan, work: HostWork, facts: HostFacts, rehearse: bool) -> Finding:
    host = work.name
    if rehearse:
        return Finding(host, "accel", "skipped", "rehearsal", "a rehearsal needs no accelerators")
    if plan.platform == "cpu":
        return Finding(host, "accel", "skipped", "cpu", "a cpu profile needs no accelerators")
    tool, key, parse = _TOOLS[plan.platform]
    need = sum(cards_per_node(plan, node) for node in work.nodes)
    section = facts.section(key) or {}
    if "error" in section:
        return Finding(host, "accel", "skipped", "probe error", f"{tool}: {section['error']}")
    if not section.get("found"):
        why = f"{tool} not found on {host} (PATH, /usr/local/sbin): cannot count the {need} cards"
        return Finding(host, "accel", "skipped", f"no {tool}", why)
    fix = f"check the driver: run `{tool}` on {host}"
    if section.get("timed_out"):
        why = f"{tool} did not answer within {section.get('timeout')} s (a hung driver?)"
        return Finding(host, "accel", "failed", f"{tool} hung", why, fix)
    if section.get("rc"):
        err = " / ".join((section.get("stderr") or "").strip().splitlines()[-2:])
        why = f"{tool} exited with status {section['rc']}: {err or 'no error output'}"
        return Finding(host, "accel", "failed", f"{tool} failed", why, fix)
    report = parse(section.get("stdout") or "")
    problems = compare_with_need(report.accelerators, need)
    if problems:
        fix = "free the cards (stop other jobs) or pick a profile sized for this hardware"
        detail = f"{'; '.join(problems)} (found: {report.summary})"
        return Finding(host, "accel", "failed", f"{len(report.accelerators)}/{need}", detail, fix)
    detail = f"{report.summary}; the profile needs {need} per node"
    return Finding(host, "accel", "ok", f"{len(report.accelerators)}/{need}", detail)


def interface_map(facts: HostFacts) -> dict[str, list[str]]:
    """The probe's interfaces as {name: ["address/prefix", ...]}, the form `detect_nic`
    reads on the host at `up`."""
    section = facts.section("interfaces") or {}
    return {
        i["name"]: list(i.get("ipv4", [])) + list(i.get("ipv6", []))
        for i in section.get("interfaces") or []
        if i.get("name")
    }


def holding_interface(facts: HostFacts, address: str) -> tuple[str | None, str]:
    """The interface that carries `address` and why (`host.facts.detect_nic`, as `up`'s
    `nic` task detects it), or (None, "")."""
    found = detect_nic(address, interface_map(facts)) if is_ip(address) else None
    return found if found is not None else (None, "")


def nic(work: HostWork, facts: HostFacts) -> Finding | None:
    host = work.name
    node = work.nodes[0]
    if not is_ip(node.address):
        why = f"the address {node.address} is a name; set nic to check the interface"
        return Finding(host, "nic", "skipped", "name", why)
    names = sorted(interface_map(facts))
    holder, how = holding_interface(facts, node.address)
    if node.nic:
        if node.nic not in names:
            why = f"interface {node.nic} does not exist on {host} (it has: {', '.join(names)})"
            fix = f"set nic: {holder} for {host}" if holder else "set nic to an existing interface"
            return Finding(host, "nic", "failed", f"no {node.nic}", why, fix)
        if holder != node.nic:
            where = f"; {node.address} is on {holder}" if holder else ""
            why = (
                f"{node.nic} does not hold {node.address}{where}: collectives would use "
                "another network than the one the plan addresses"
            )
            fix = f"set nic: {holder} for {host}" if holder else "fix nic or ansible_host"
            return Finding(host, "nic", "failed", f"{node.nic} ≠ addr", why, fix)
        return Finding(host, "nic", "ok", node.nic, f"{node.nic} {how}")
    if holder:
        uses = ", ".join(node.nic_env) or "nothing"
        detail = f"{holder} {how} (detected; `up` sets it in {uses})"
        return Finding(host, "nic", "ok", holder, detail)
    if node.nic_env or node.bind == node.address:
        why = f"no interface on {host} holds {node.address} (it has: {', '.join(names)})"
        fix = "set ansible_host to an address of this host, or set nic in the inventory"
        return Finding(host, "nic", "failed", "no address", why, fix)
    return Finding(host, "nic", "skipped", "unused", f"{node.address} is not on this host")


def env_files(work: HostWork, facts: HostFacts, rehearse: bool) -> Finding | None:
    host = work.name
    paths = list(dict.fromkeys(p for node in work.nodes for p in node.source))
    if not paths:
        return None
    files = facts.section("files") or {}
    missing = [p for p in paths if not (files.get(p) or {}).get("exists")]
    if not missing:
        return Finding(host, "env", "ok", f"{len(paths)} found", ", ".join(paths))
    listed = ", ".join(missing)
    if rehearse:
        why = f"missing {listed}; a rehearsal sources only the scripts that exist"
        return Finding(host, "env", "skipped", "rehearsal", why)
    return Finding(
        host,
        "env",
        "failed",
        f"{len(missing)} missing",
        f"missing on {host}: {listed}",
        "install the CANN toolkit (and NNAL) on this host, or fix `source:` in the profile",
    )


def _listening(section: list[dict[str, Any]]) -> dict[int, list[str]]:
    """The probe's sockets as {port: [address, ...]}, the form `port_holders` reads."""
    found: dict[int, list[str]] = {}
    for sock in section:
        found.setdefault(int(sock["port"]), []).append(sock["address"])
    return found


def ports_free(plan: Plan, work: HostWork, facts: HostFacts) -> Finding | None:
    host = work.name
    planned = plan.listeners(host)
    if not planned:
        return None
    listening = facts.section("listening")
    if not isinstance(listening, list):
        return Finding(host, "ports", "skipped", "unknown", f"cannot list sockets: {listening}")
    held = _listening(listening)
    busy = [(p, h) for p in planned if (h := port_holders(p.port, p.bind, held))]
    if not busy:
        return Finding(host, "ports", "ok", f"{len(planned)} free", _port_list(planned))
    why = "; ".join(
        f"port {p.port} ({p.purpose}) is in use on {host}: something listens on "
        f"{holders[0]}:{p.port}"
        for p, holders in busy
    )
    first = busy[0][0]
    fix = (
        f"stop what holds it (`ss -ltnp 'sport = :{first.port}'` on {host} shows it; a "
        f"toolkit run? `toolkit status`, `toolkit down`), or move it: {_move(first)}"
    )
    summary = "busy " + ",".join(str(p.port) for p, _ in busy[:3]) + ("…" if len(busy) > 3 else "")
    return Finding(host, "ports", "failed", summary, why, fix)


def writable(host: str, path: str, info: dict[str, Any], facts: HostFacts) -> Finding | None:
    """✘ when the run's files could not be created under `path` (None: writable or unknown)."""
    if info.get("writable", True):
        return None
    checked = info.get("checked", path)
    who = f"uid {facts.uid}" if facts.uid is not None else "the SSH user"
    where = path if checked == path else f"{path} (its nearest existing directory {checked})"
    why = f"{where} is not writable by {who}: {info.get('write_error', 'refused')}"
    fix = (
        f"make {checked} writable for {who} (a read-only mount? another owner?), or set "
        "workdir for this host in the inventory to a writable directory"
    )
    return Finding(host, "disk", "failed", "not writable", why, fix)


def _move(port: Listener) -> str:
    if port.purpose == HCCL_PURPOSE:
        return (
            "set env HCCL_IF_BASE_PORT to a free range of 16 ports (--set env.HCCL_IF_BASE_PORT=…)"
        )
    return f"--set {port.setting}=<port>"


def _port_list(planned: list[Listener]) -> str:
    singles = [f"{p.port} {p.purpose}" for p in planned if p.purpose != HCCL_PURPOSE]
    hccl = [p.port for p in planned if p.purpose == HCCL_PURPOSE]
    if hccl:
        singles.append(f"{min(hccl)}-{max(hccl)} HCCL")
    return ", ".join(singles)


def disk(work: HostWork, facts: HostFacts) -> Finding:
    host = work.name
    disks = facts.section("disk") or {}
    for path in (work.workdir, f"{work.workdir.rstrip('/')}/runs"):
        unwritable = writable(host, path, disks.get(path) or {}, facts)
        if unwritable is not None:
            return unwritable
    info = disks.get(work.workdir) or {}
    free = info.get("free_bytes")
    if free is None:
        return Finding(host, "disk", "skipped", "unknown", f"cannot measure {work.workdir}")
    where = f"{short_bytes(free)} free for {work.workdir} (on {info.get('checked')})"
    if free < MIN_FREE_BYTES:
        why = f"only {where}; logs need at least {short_bytes(MIN_FREE_BYTES)}"
        fix = "free space there, or set workdir to a larger filesystem in the inventory"
        return Finding(host, "disk", "failed", short_bytes(free), why, fix)
    return Finding(host, "disk", "ok", short_bytes(free), where)


def bench_client(plan: Plan, work: HostWork, facts: HostFacts, optional: str = "") -> Finding:
    """Which bench client `toolkit bench` will run on this host, and whether it is there.
    `optional`: a missing client is skipped with this reason (`up` does not need it)."""
    host = work.name
    if facts.python_missing:
        return Finding(host, "bench", "skipped", "no python", f"{facts.python} is missing")
    versions = {name: facts.package(name).get("version") for name in CLIENTS}
    installed = {name: bool(versions[name] or facts.package(name).get("path")) for name in CLIENTS}
    choice = choose_client(plan.engine, plan.bench_client, installed, versions)
    if choice.installed:
        return Finding(
            host, "bench", "ok", f"{choice.name} {choice.version or ''}".strip(), choice.describe()
        )
    if optional:
        why = f"{choice.command}: {optional}"
        return Finding(host, "bench", "skipped", f"no {choice.name}", why)
    return Finding(
        host,
        "bench",
        "failed",
        f"no {choice.name}",
        f"{choice.command} will run on {host} ({choice.reason}) but {choice.name} is not "
        f"installed for {facts.python}",
        missing_client_fix(choice, facts.python, host),
    )
