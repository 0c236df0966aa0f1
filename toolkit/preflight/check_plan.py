"""What `toolkit check` must verify, derived from the Plan alone (pure: no SSH, no I/O).

The TCP paths that must open between hosts before launch, the cards a node needs, and
the facts to ask each host's probe for. The ports each host must find free are the plan's
own (`Plan.listeners`), the list `up` and `down` use too.

Worked example, a3-1p1d-64k on prefill p1 p2 and decode d1 d2, router on p1:

    ports on p1: 8000 (prefill0.0 http), 8998 (bootstrap), 5000 (dist-init), 6688 and
        29000 (router http, prometheus), 24670 (MemFabric store), 60000-60015 (HCCL)
    paths:  p2 → p1:5000 (dist-init)        d2 → d1:5000 (dist-init)
            p2 → p1:8998 (prefill rank 1 registers at its leader's bootstrap server)
            d1, d2 → p1:8998 (KV bootstrap, at the address the router hands to decode)
            p2, d1, d2 → p1:24670 (ASCEND_MF_STORE_URL)
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from toolkit.plan import NodePlan, Plan, mf_store
from toolkit.planner import ENGINES

# Flags that size a node's share of the ranks (abbreviations included: `--tp` is common).
_TP = ("--tp-size", "--tensor-parallel-size", "--tp", "-tp")
_PP = ("--pp-size", "--pipeline-parallel-size", "--pp", "-pp")
_DP = ("--dp-size", "--data-parallel-size", "--dp", "-dp")
_DP_ATTENTION = ("--enable-dp-attention", "--attn-dp-size")


@dataclass(frozen=True)
class Route:
    """A TCP connection `source` must be able to open to `target` before launch.

    The check listens on `target` at `bind:port` and connects from `source` to
    `address:port` (the address the engine will dial, which may differ from `bind`).
    """

    source: str
    target: str
    address: str
    port: int
    bind: str
    purpose: str
    fix: str

    @property
    def key(self) -> str:
        return f"{self.source}>{self.target}:{self.address}:{self.port}"


def engine_args_start(plan: Plan) -> int:
    """Index in a node's argv where the engine's own arguments start (after the module)."""
    return 3 + len(ENGINES[plan.engine].subcommand)


def node_model_path(node: NodePlan, plan: Plan) -> str:
    """The node's model path: the planner writes it fifth in every argv.

    sglang: [python, -m, sglang.launch_server, --model-path, MODEL, ...];
    vLLM:   [python, -m, vllm.entrypoints.cli.main, serve, MODEL, ...].
    """
    return node.argv[4] if len(node.argv) > 4 else plan.model_path


def _flag_int(argv: list[str], names: tuple[str, ...], default: int = 1) -> int:
    value = default
    for i, token in enumerate(argv):
        name, eq, inline = token.partition("=")
        if name in names:
            raw = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            value = int(raw) if raw.isdigit() else value
    return value


def cards_per_node(plan: Plan, node: NodePlan) -> int:
    """Accelerators one node of this role takes: its instance's ranks over its nodes.

    sglang: tp × pp ranks (DP attention runs inside the TP group; plain `--dp-size`
    without it replicates the TP group dp times). vLLM: tp × pp × dp.
    Example: A3 prefill tp 4 × pp 8 over 2 nodes → 16 cards (chips) per node. A cpu
    profile takes none.
    """
    if plan.platform == "cpu":
        return 0
    argv = node.argv
    world = _flag_int(argv, _TP) * _flag_int(argv, _PP)
    dp = _flag_int(argv, _DP)
    if plan.engine == "vllm" or not any(t.partition("=")[0] in _DP_ATTENTION for t in argv):
        world *= dp
    return max(1, math.ceil(world / node.nnodes))


def _router_bootstrap_hosts(plan: Plan) -> dict[int, str]:
    """Bootstrap port → the host part of the router's `--prefill URL PORT` for it."""
    out: dict[int, str] = {}
    argv = plan.router.argv if plan.router else []
    for i, token in enumerate(argv[:-2]):
        if token == "--prefill" and argv[i + 2].isdigit():
            host = urlsplit(argv[i + 1]).hostname
            if host:
                out[int(argv[i + 2])] = host
    return out


def routes(plan: Plan) -> list[Route]:
    """Every connection the launch depends on, one per (source host, target, port)."""
    found: dict[str, Route] = {}

    def add(source: NodePlan, target: NodePlan, address: str, port: int, bind: str, what: str):
        fix = (
            f"open TCP {port} on {target.host} to {source.host} ({source.address}), or fix the "
            f"address {address} if it is wrong"
        )
        route = Route(source.host, target.host, address, port, bind, what, fix)
        found.setdefault(route.key, route)

    leaders = {(n.role, n.instance): n for n in plan.nodes if n.is_leader}
    dialed = _router_bootstrap_hosts(plan)
    for node in plan.nodes:
        leader = leaders[(node.role, node.instance)]
        if not node.is_leader and "dist_init" in leader.listen:
            port = leader.listen["dist_init"]
            add(node, leader, leader.address, port, leader.address, f"{leader.name} dist-init")
        if node.role == "prefill" and not node.is_leader:
            port = leader.listen["bootstrap"]
            add(node, leader, leader.address, port, leader.bind, f"{leader.name} bootstrap")
        if node.role == "decode":
            for prefill in (n for n in plan.nodes if n.role == "prefill" and n.is_leader):
                port = prefill.listen["bootstrap"]
                address = dialed.get(port, prefill.address)
                add(node, prefill, address, port, prefill.bind, f"{prefill.name} bootstrap")
    store = mf_store(plan)
    if store is not None:
        holder = next(n for n in plan.nodes if n.host == store[0])
        for node in plan.nodes:
            if node.host != holder.host:
                add(node, holder, store[1], store[2], store[1], "MemFabric store")
    return list(found.values())


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def short_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def version_key(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", text or "")
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()
