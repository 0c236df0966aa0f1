"""The collective check, pure: which ranks run where, and what their timings mean.

`toolkit check --collective` proves each instance's interconnect before a long weight load:
one short-lived worker per device on every node of the instance, in the node's planned
environment, rendezvous on the instance leader, an all-reduce per size and one all-gather.
This module plans that (Plan → `InstanceTest`s) and judges the workers' results
(→ `Finding`s and a per-instance summary); `executor/collective.py` runs it over SSH.

Worked example, a3-1p1d-64k with gloo (no accelerator), prefill on h1 h2 (dist-init 5000),
`nic: coll0` on both: instance `prefill0` is rank 0 on h1 ("h1 cpu0 via coll0") and rank 1
on h2, rendezvous at h1's address on the first free port from 5001, GLOO_SOCKET_IFNAME=coll0
on both. Bus bandwidth follows nccl-tests: all-reduce busbw = bytes / time × 2(n-1)/n,
all-gather busbw = bytes / time × (n-1)/n, time being the slowest rank's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.plan import NodePlan, Plan
from toolkit.preflight.check_facts import Finding
from toolkit.preflight.check_plan import cards_per_node

MIB = 1 << 20
BACKENDS = {"cuda": "nccl", "ascend": "hccl"}
IFNAME_VARS = {
    "gloo": "GLOO_SOCKET_IFNAME",
    "nccl": "NCCL_SOCKET_IFNAME",
    "hccl": "HCCL_SOCKET_IFNAME",
}
VISIBLE_VARS = {"nccl": "CUDA_VISIBLE_DEVICES", "hccl": "ASCEND_RT_VISIBLE_DEVICES"}
DEVICE_WORD = {"nccl": "GPU", "hccl": "NPU", "gloo": "cpu"}
# CPU collectives over a test network are slow: smaller sizes, fewer repetitions.
DEFAULT_SIZES_MIB = {"nccl": [1, 16, 64, 256], "hccl": [1, 16, 64, 256], "gloo": [0.25, 1, 4]}
DEFAULT_ITERS = {"nccl": 10, "hccl": 10, "gloo": 3}
IMPORT_ALLOWANCE_S = 60.0  # torch (+ torch_npu) import and device setup, before the rendezvous


@dataclass(frozen=True)
class Rank:
    rank: int
    host: str
    local: int  # device index under the node's visibility mask
    device: str  # "GPU 3", "NPU 0", "cpu0"
    interface: str  # the backend's *_SOCKET_IFNAME, or "default"

    @property
    def label(self) -> str:
        return f"rank {self.rank} ({self.host} {self.device} via {self.interface})"


@dataclass(frozen=True)
class HostPart:
    """One node's share of an instance: its ranks and the environment they run in."""

    node: NodePlan
    ranks: list[Rank]
    env: dict[str, str]

    @property
    def host(self) -> str:
        return self.node.host


@dataclass(frozen=True)
class InstanceTest:
    name: str  # "prefill0"
    backend: str
    master_addr: str
    port_base: int
    parts: list[HostPart]
    sizes: list[int]
    gather_bytes: int
    iters: int
    join_timeout_s: float
    op_timeout_s: float
    min_busbw_gbps: float | None = None

    @property
    def world(self) -> int:
        return sum(len(p.ranks) for p in self.parts)

    @property
    def leader(self) -> str:
        return self.parts[0].host

    @property
    def deadline_s(self) -> float:
        return IMPORT_ALLOWANCE_S + self.join_timeout_s + self.op_timeout_s

    def ranks(self) -> list[Rank]:
        return [r for p in self.parts for r in p.ranks]

    def spec(self, part: HostPart, port: int | None) -> dict[str, Any]:
        """The launcher's argument for one host (`port` None: the leader picks it)."""
        return {
            "backend": self.backend,
            "master_addr": self.master_addr,
            "port": port,
            "port_base": self.port_base,
            "world": self.world,
            "ranks": [{"rank": r.rank, "local": r.local, "host": r.host} for r in part.ranks],
            "sizes": self.sizes,
            "gather_bytes": self.gather_bytes,
            "iters": self.iters,
            "join_timeout": self.join_timeout_s,
            "op_timeout": self.op_timeout_s,
            "deadline": self.deadline_s,
        }


def backend_for(platform: str, requested: str | None, rehearse: bool) -> str:
    """nccl on CUDA, hccl on Ascend; gloo (CPU) for rehearsals or when asked."""
    if requested and requested != "auto":
        return requested
    return "gloo" if rehearse else BACKENDS[platform]


def plan_collectives(
    plan: Plan, backend: str, nics: dict[str, str | None] | None = None
) -> list[InstanceTest]:
    """One test per instance, nodes in rank order; `nics`: detected interface per host."""
    settings = plan.collective or {}
    sizes_mib = settings.get("sizes_mib") or DEFAULT_SIZES_MIB[backend]
    sizes = [max(4, int(float(s) * MIB)) for s in sizes_mib]
    instances: dict[tuple[str, int], list[NodePlan]] = {}
    for node in plan.nodes:
        instances.setdefault((node.role, node.instance), []).append(node)
    tests = []
    for (role, instance), nodes in instances.items():
        nodes = sorted(nodes, key=lambda n: n.node_rank)
        leader = nodes[0]
        parts, next_rank = [], 0
        for node in nodes:
            env = _planned_env(node, (nics or {}).get(node.host))
            count = 1 if backend == "gloo" else cards_per_node(plan, node)
            devices = _devices(backend, env, count)
            interface = env.get(IFNAME_VARS[backend]) or "default"
            ranks = [
                Rank(next_rank + i, node.host, i, device, interface)
                for i, device in enumerate(devices)
            ]
            next_rank += len(ranks)
            parts.append(HostPart(node, ranks, env))
        base = leader.listen.get("dist_init", leader.port) + 1
        tests.append(
            InstanceTest(
                name=f"{role}{instance}",
                backend=backend,
                master_addr=leader.address,
                port_base=base,
                parts=parts,
                sizes=sizes,
                gather_bytes=sizes[len(sizes) // 2],
                iters=int(settings.get("iters") or DEFAULT_ITERS[backend]),
                join_timeout_s=float(settings.get("join_timeout_s") or 30.0),
                op_timeout_s=float(settings.get("op_timeout_s") or 120.0),
                min_busbw_gbps=settings.get("min_busbw_gbps"),
            )
        )
    return tests


def _planned_env(node: NodePlan, detected_nic: str | None) -> dict[str, str]:
    """The node's env, with the NIC variables filled as `up` fills them."""
    env = dict(node.env)
    if node.nic_env and detected_nic:
        env.update(dict.fromkeys(node.nic_env, detected_nic))
    return env


def _devices(backend: str, env: dict[str, str], count: int) -> list[str]:
    word = DEVICE_WORD[backend]
    if backend == "gloo":
        return [f"{word}{i}" for i in range(count)]
    mask = env.get(VISIBLE_VARS[backend], "")
    visible = [v.strip() for v in mask.split(",") if v.strip()]
    return [f"{word} {visible[i] if i < len(visible) else i}" for i in range(count)]


# ----------------------------------------------------------------------------- judging


@dataclass
class Outcome:
    """What came back from one instance: per host, its ranks' results or why none came."""

    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)
    host_errors: dict[str, str] = field(default_factory=dict)


def judge(test: InstanceTest, outcome: Outcome) -> tuple[list[Finding], dict[str, Any]]:
    """One `collective` finding per host of the instance, and the instance's summary."""
    by_rank = {r.rank: r for r in test.ranks()}
    problems: dict[str, list[str]] = {}
    for part in test.parts:
        if part.host in outcome.host_errors:
            problems.setdefault(part.host, []).append(outcome.host_errors[part.host])
            continue
        # Ranks of one host that failed alike are one line (16 NPUs without torch_npu).
        alike: dict[tuple[str, tuple[int, ...]], list[Rank]] = {}
        for rank in part.ranks:
            result = outcome.ranks.get(rank.rank) or {"ok": False, "error": "no result"}
            if not result.get("ok"):
                key = (str(result.get("error")), tuple(result.get("missing", [])))
                alike.setdefault(key, []).append(rank)
        for (error, missing), ranks in alike.items():
            text = f"{ranks_text(ranks)}: {error}"
            absent = [by_rank[m] for m in missing if m in by_rank]
            if absent:
                text += f"; not joined: {ranks_text(absent)}"
            problems.setdefault(part.host, []).append(text)
    summary: dict[str, Any] = {
        "instance": test.name,
        "backend": test.backend,
        "world": test.world,
        "ranks": [r.label for r in test.ranks()],
        "problems": [p for texts in problems.values() for p in texts],
    }
    if problems:
        summary["ok"] = False
        return _failed(test, problems), summary
    stats = _stats(test, outcome)
    summary.update(stats)
    figure = stats["peak_busbw_gbps"]
    low = test.min_busbw_gbps is not None and test.world > 1 and figure < test.min_busbw_gbps
    summary["ok"] = not low
    return _passed(test, stats, low), summary


def ranks_text(ranks: list[Rank]) -> str:
    """`rank 1 (h2 cpu0 via eth0)`; several on one host: `ranks 16–31 (h2 NPU 0–15 via eth0)`."""
    groups: dict[tuple[str, str], list[Rank]] = {}
    for rank in ranks:
        groups.setdefault((rank.host, rank.interface), []).append(rank)
    out = []
    for (host, interface), members in groups.items():
        if len(members) == 1:
            out.append(members[0].label)
            continue
        numbers = _span([str(r.rank) for r in members])
        out.append(f"ranks {numbers} ({host} {_device_span(members)} via {interface})")
    return ", ".join(out)


def _span(numbers: list[str]) -> str:
    values = [int(n) for n in numbers] if all(n.isdigit() for n in numbers) else []
    if len(values) > 2 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(numbers)


def _device_span(ranks: list[Rank]) -> str:
    words = {r.device.rpartition(" ")[0] for r in ranks}
    if len(words) == 1 and words != {""}:
        word = words.pop()
        return f"{word} {_span([r.device.rpartition(' ')[2] for r in ranks])}"
    return ", ".join(r.device for r in ranks)


def _failed(test: InstanceTest, problems: dict[str, list[str]]) -> list[Finding]:
    out = []
    for part in test.parts:
        texts = problems.get(part.host)
        if not texts:
            detail = f"{test.name}: this host's ranks joined; the instance failed elsewhere"
            out.append(Finding(part.host, "collective", "ok", f"{test.name} joined", detail))
            continue
        detail = f"{test.name} ({test.backend}, world {test.world}): " + "; ".join(texts)
        summary, fix = _cause(texts[0], test, part)
        out.append(Finding(part.host, "collective", "failed", summary, detail, fix))
    return out


def _cause(text: str, test: InstanceTest, part: HostPart) -> tuple[str, str]:
    """The table cell and the fix for a host's first problem."""
    host, leader = part.host, test.leader
    interface = part.ranks[0].interface if part.ranks else "default"
    var = IFNAME_VARS[test.backend]
    if "does not exist" in text:
        return "no interface", f"set nic for {host} to an interface it has (`ip -br link`)"
    if "is down" in text:
        return "interface down", (
            f"bring {interface} up on {host} (`ip link set {interface} up`), or set nic to a "
            "working interface"
        )
    if "rendezvous" in text:
        return "no rendezvous", (
            f"open TCP {test.port_base}-{test.port_base + 31} on {leader} to {host} (the "
            f"ports next to dist-init), and check the route to {test.master_addr}"
        )
    if "did not join" in text:
        return "ranks missing", "the ranks named did not join: see their hosts' lines"
    if "in device" in text:
        device = part.ranks[0].device if part.ranks else "the device"
        return "no device", f"check the driver and that {device} is visible on {host}"
    if "cannot import torch" in text:
        package = "torch_npu" if "torch_npu" in text else "torch"
        return f"no {package}", f"install {package} for the engine's python on {host}"
    if "did not finish" in text:
        return "timed out", (
            f"a rank hung in a collective: check {var} ({interface}) on every host and that "
            "the hosts reach each other on it"
        )
    return "failed", f"see the error above; {var} is {interface} on {host}"


def _stats(test: InstanceTest, outcome: Outcome) -> dict[str, Any]:
    n = test.world
    results = [outcome.ranks[r.rank] for r in test.ranks()]
    rows = []
    for i, size in enumerate(test.sizes):
        seconds = max(r["sizes"][i]["seconds"] for r in results)
        algbw = size / seconds / 1e9 if seconds > 0 else 0.0
        busbw = algbw * 2 * (n - 1) / n
        rows.append({"bytes": size, "seconds": seconds, "algbw_gbps": algbw, "busbw_gbps": busbw})
    gather_s = max(r["gather"]["seconds"] for r in results)
    gather_bytes = results[0]["gather"]["bytes"]
    gather_alg = gather_bytes / gather_s / 1e9 if gather_s > 0 else 0.0
    slowest = max(results, key=lambda r: sum(s["seconds"] for s in r["sizes"]))
    by_rank = {r.rank: r for r in test.ranks()}
    return {
        "sizes": rows,
        "latency_us": rows[0]["seconds"] * 1e6,
        "peak_busbw_gbps": max(row["busbw_gbps"] for row in rows),
        "peak_algbw_gbps": max(row["algbw_gbps"] for row in rows),
        "all_gather": {
            "bytes": gather_bytes,
            "seconds": gather_s,
            "busbw_gbps": gather_alg * (n - 1) / n,
        },
        "slowest": {
            "rank": slowest["rank"],
            "label": by_rank[slowest["rank"]].label,
            "seconds": sum(s["seconds"] for s in slowest["sizes"]),
        },
    }


def size_text(size: int) -> str:
    return f"{size / MIB:g} MiB" if size >= MIB else f"{size // 1024} KiB"


def report_lines(summary: dict[str, Any]) -> list[str]:
    """The per-instance text under the table: sizes, bandwidth, latency, slowest rank."""
    head = f"{summary['instance']}: {summary['backend']}, world {summary['world']}"
    if "sizes" not in summary:
        return [f"{head}: failed"]
    latency = f"latency {summary['latency_us']:.0f} µs at {size_text(summary['sizes'][0]['bytes'])}"
    if summary["world"] == 1:
        # One rank moves no data: the times only show that the device and backend start.
        return [f"{head}: no peers, no data moved (a one-rank all-reduce is a no-op); {latency}"]
    cells = ", ".join(f"{size_text(r['bytes'])} {r['busbw_gbps']:.2f}" for r in summary["sizes"])
    gather = summary["all_gather"]
    return [
        f"{head}; all-reduce busbw GB/s: {cells}",
        f"{summary['instance']}: {latency}; all-gather {size_text(gather['bytes'])} "
        f"{gather['busbw_gbps']:.2f} GB/s busbw; slowest {summary['slowest']['label']} "
        f"({summary['slowest']['seconds'] * 1e3:.1f} ms over the sizes)",
    ]


def _passed(test: InstanceTest, stats: dict[str, Any], low: bool) -> list[Finding]:
    n = test.world
    figure = stats["peak_busbw_gbps"]
    summary_cell = f"{n}r {figure:.2f} GB/s" if n > 1 else f"1r {stats['latency_us']:.0f} µs"
    lines = report_lines({"instance": test.name, "backend": test.backend, "world": n, **stats})
    out = []
    for part in test.parts:
        if part.host != test.leader:
            mine = ", ".join(r.device for r in part.ranks)
            detail = f"{test.name}: {mine} joined and ran (see {test.leader} for the figures)"
            out.append(Finding(part.host, "collective", "ok", f"{test.name} ok", detail))
            continue
        if low:
            detail = (
                f"{test.name}: bus bandwidth {figure:.2f} GB/s is below the profile's "
                f"min_busbw_gbps {test.min_busbw_gbps:g} (ranks: "
                f"{', '.join(r.label for r in test.ranks())})"
            )
            fix = (
                "check the interface each rank used (speed, MTU, NCCL_IB_*/HCCL settings), "
                "or lower collective.min_busbw_gbps"
            )
            out.append(
                Finding(part.host, "collective", "failed", summary_cell, detail, fix, tuple(lines))
            )
            continue
        if n == 1:
            detail = f"{test.name}: one rank, nothing to measure between devices; " + lines[0]
        elif test.min_busbw_gbps is not None:
            detail = f"{test.name}: peak busbw {figure:.2f} GB/s ≥ min {test.min_busbw_gbps:g} GB/s"
        else:
            detail = f"{test.name}: peak busbw {figure:.2f} GB/s, informational (no min_busbw_gbps)"
        out.append(Finding(part.host, "collective", "ok", summary_cell, detail, notes=tuple(lines)))
    return out
