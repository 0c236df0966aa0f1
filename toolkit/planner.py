"""The planner: inventory + profile → Plan. Pure: no SSH, no files, no clock.

Instances are runs of `nnodes` consecutive hosts of a group, in inventory order. Worked
example, 2P1D (a3-2p1d-128k-prefix90: prefill nnodes 2 × 2 instances, decode nnodes 2):

    prefill hosts p1 p2 p3 p4, decode hosts d1 d2
    prefill instance 0 = p1 (rank 0, leader) + p2 (rank 1): --dist-init-addr p1:5000,
        bootstrap port 8998
    prefill instance 1 = p3 (rank 0, leader) + p4 (rank 1): --dist-init-addr p3:5000,
        bootstrap port 8999
    decode instance 0  = d1 (rank 0) + d2 (rank 1): --dist-init-addr d1:5000
    router (on p1): --prefill http://p1:8000 8998 --prefill http://p3:8000 8999
                    --decode http://d1:8001
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolkit import ports
from toolkit.errors import PlanError
from toolkit.inventory import SERVING_GROUPS, Host, Inventory
from toolkit.plan import (
    Connection,
    Endpoint,
    NodePlan,
    Plan,
    ProcessPlan,
    Tuning,
    host_port,
    url_host,
)
from toolkit.profile_schema import FlagValue, Profile, ServerRole
from toolkit.runtime.container import plan_container
from toolkit.secrets import secret_flags_to_env

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::")


@dataclass(frozen=True)
class EngineSpec:
    module: str
    subcommand: tuple[str, ...]
    default_port: int
    positional_model: bool


ENGINES = {
    "sglang": EngineSpec("sglang.launch_server", (), ports.SGLANG_HTTP, False),
    # `vllm serve` is vllm's console script for this module.
    "vllm": EngineSpec("vllm.entrypoints.cli.main", ("serve",), ports.VLLM_HTTP, True),
}
# The P/D router per engine. vLLM's P/D needs vllm-router (another CLI and KV connector
# flags on the servers), which is not planned yet.
PD_ROUTERS = {"sglang": "sglang_router.launch_router"}
ROUTER_MODULE = PD_ROUTERS["sglang"]
BENCH_MODULE = "sglang.bench_serving"


def build_plan(inventory: Inventory, profile: Profile) -> Plan:
    """Compute every node's launch, the router wiring and the benchmark command."""
    groups = _check_groups(inventory, profile)
    notes = list(profile.meta.corrections)
    nodes: list[NodePlan] = []
    mf_store = _mf_store_url(profile, groups)
    for role_name in ("prefill", "decode", "mixed"):
        if role_name in profile.roles:
            role = profile.roles[role_name]
            nodes += _plan_role(role_name, role, groups[role_name], profile, mf_store, inventory)
    router = _plan_router(profile, inventory, nodes, notes) if profile.meta.mode == "pd" else None
    endpoint = _endpoint(profile, nodes, router)
    model_path = _model_path(groups[next(iter(profile.roles))][0], profile, inventory)
    bench, router, endpoint = _plan_bench(
        profile, inventory, nodes, router, endpoint, notes, model_path
    )
    plan = Plan(
        profile=profile.name,
        meta=profile.meta.model_dump(mode="json"),
        engine=profile.engine,
        platform=profile.platform,
        mode=profile.meta.mode,
        model_path=model_path,
        nodes=nodes,
        router=router,
        bench=bench,
        endpoint=endpoint,
        slo=[s.model_dump(mode="json") for s in profile.slo],
        rehearsal=_rehearsal(profile),
        readiness_timeout_s=profile.readiness_timeout_s,
        collective=profile.collective.model_dump(),
        inventory=inventory.path,
        notes=notes,
        bench_client=profile.bench.client,
        plays={play: list(roles) for play, roles in profile.plays.items()},
    )
    _check_ports(plan, inventory)
    return plan


def _check_groups(inventory: Inventory, profile: Profile) -> dict[str, list[Host]]:
    wanted = list(profile.roles)
    groups: dict[str, list[Host]] = {}
    for role_name in wanted:
        role = profile.roles[role_name]
        hosts = inventory.group(role_name)
        need = role.nnodes * role.instances
        if len(hosts) != need:
            shape = f"{role.instances} instance{'s' if role.instances > 1 else ''}: {need} hosts"
            have = f"{len(hosts)} {role_name} host{'s' if len(hosts) != 1 else ''}"
            raise PlanError(
                f"profile {profile.name} needs {role_name} hosts in instances of "
                f"{role.nnodes} node{'s' if role.nnodes > 1 else ''} ({shape}); "
                f"{inventory.path} has {have}"
                + (f" ({inventory.where(role_name)})" if hosts else "")
            )
        groups[role_name] = hosts
    for other in SERVING_GROUPS:
        if other not in wanted and inventory.group(other):
            raise PlanError(
                f"profile {profile.name} is {profile.meta.mode} ({' + '.join(wanted)}), but "
                f"{inventory.where(other)} lists {other} hosts; use a {other} profile or "
                f"move the hosts under {' / '.join(wanted)}"
            )
    return groups


def _model_path(host: Host, profile: Profile, inventory: Inventory) -> str:
    path = host.model_path or profile.model_path
    if not path:
        raise PlanError(
            f"profile {profile.name} needs model_path (the weights directory on every "
            f"serving host): set `model_path: /models/...` under all.vars in "
            f"{inventory.path}, or pass --set model_path=/models/..."
        )
    return path


def _mf_store_url(profile: Profile, groups: dict[str, list[Host]]) -> str | None:
    if profile.mf_store_port is None or "prefill" not in groups:
        return None
    return f"tcp://{host_port(groups['prefill'][0].address, profile.mf_store_port)}"


def _plan_role(
    role_name: str,
    role: ServerRole,
    hosts: list[Host],
    profile: Profile,
    mf_store: str | None,
    inventory: Inventory,
) -> list[NodePlan]:
    engine = ENGINES[profile.engine]
    port = role.port or engine.default_port
    nodes = []
    for index, host in enumerate(hosts):
        instance, rank = divmod(index, role.nnodes)
        leader = hosts[instance * role.nnodes]
        listen = {"http": port}
        topology: list[str] = []
        if role_name in ("prefill", "decode"):
            topology += ["--disaggregation-mode", role_name]
        bind = _bind_address(role.host, host)
        if bind is not None:
            topology += ["--host", bind]
        if role.port is not None:
            topology += ["--port", str(role.port)]
        if role.nnodes > 1 and profile.engine == "vllm":
            assert role.dist_init_port is not None  # the schema guarantees it
            topology += vllm_data_parallel(rank, role.nnodes, leader.address, role.dist_init_port)
            if rank == 0:
                listen["dist_init"] = role.dist_init_port
            else:
                del listen["http"]  # a headless engine serves no HTTP
        elif role.nnodes > 1:
            assert role.dist_init_port is not None  # the schema guarantees it
            topology += ["--dist-init-addr", host_port(leader.address, role.dist_init_port)]
            if rank == 0:
                listen["dist_init"] = role.dist_init_port
        if role_name == "prefill":
            assert role.bootstrap_port is not None
            bootstrap = role.bootstrap_port + instance
            topology += ["--disaggregation-bootstrap-port", str(bootstrap)]
            if rank == 0:
                listen["bootstrap"] = bootstrap
        if profile.engine == "sglang" and (role.nnodes > 1 or role.rank_flags == "always"):
            topology += ["--node-rank", str(rank), "--nnodes", str(role.nnodes)]
        model = _model_path(host, profile, inventory)
        # Secret flags the engine also reads from its environment go there, not into argv.
        args, secret_env = secret_flags_to_env(profile.engine, role.args)
        head = [host.python, "-m", engine.module, *engine.subcommand]
        head += [model] if engine.positional_model else [profile.model_flag or "--model", model]
        argv = head + topology + render_args(args)
        container = plan_container(
            profile.container,
            host.container_runtime,
            host.container_image,
            profile=profile.name,
            node=f"{role_name}{instance}.{rank}",
            argv=argv,
            engine_words=3 + len(engine.subcommand),
            # Same paths inside: the model (a directory, not a hub id), the run's workdir.
            mounts=[*([model] if model.startswith("/") else []), host.workdir, *profile.source],
            source=list(profile.source),
        )
        nodes.append(
            NodePlan(
                host=host.name,
                address=host.address,
                role=role_name,
                instance=instance,
                node_rank=rank,
                nnodes=role.nnodes,
                leader=leader.name,
                port=port,
                env={**_env(profile, role, host, mf_store), **secret_env},
                unset_env=list(profile.unset_env),
                source=list(profile.source),
                tuning=Tuning(
                    cpu_governor=profile.tuning.cpu_governor,
                    sysctl={k: str(v) for k, v in profile.tuning.sysctl.items()},
                ),
                argv=argv,
                listen=listen,
                bind=bind or engine_default_bind(profile.engine),
                python=host.python,
                workdir=host.workdir,
                connection=connection_of(host),
                nic=host.nic,
                nic_env=[] if host.nic else list(profile.nic_env),
                container=container,
            )
        )
    return nodes


def vllm_data_parallel(rank: int, nnodes: int, head: str, rpc_port: int) -> list[str]:
    """vLLM over several nodes: one data-parallel rank per node. Rank 0 is the head (API
    server and its engine); the others run `--headless` engines that join the head's
    coordinator at --data-parallel-address:--data-parallel-rpc-port (the role's
    dist_init_port). Example, 2 nodes, head 10.0.0.1, port 13345: rank 1 gets `--headless
    --data-parallel-start-rank 1 --data-parallel-size 2 --data-parallel-size-local 1
    --data-parallel-address 10.0.0.1 --data-parallel-rpc-port 13345`."""
    flags = ["--headless", "--data-parallel-start-rank", str(rank)] if rank else []
    return [
        *flags,
        "--data-parallel-size",
        str(nnodes),
        "--data-parallel-size-local",
        "1",
        "--data-parallel-address",
        head,
        "--data-parallel-rpc-port",
        str(rpc_port),
    ]


def engine_default_bind(engine: str) -> str:
    """Where an engine listens without --host: sglang on loopback, vLLM everywhere."""
    return "127.0.0.1" if engine == "sglang" else "0.0.0.0"


def _bind_address(setting: str | None, host: Host) -> str | None:
    if setting == "node":
        return host.address
    return setting


def _env(profile: Profile, role: ServerRole, host: Host, mf_store: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in (profile.env, role.env):
        for name, value in source.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = _text(value)
    if mf_store is not None:
        env["ASCEND_MF_STORE_URL"] = mf_store
    if host.nic:
        for name in profile.nic_env:
            env[name] = host.nic
    for name in profile.host_ip_env:
        env[name] = host.address
    return env


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def render_args(args: dict[str, FlagValue]) -> list[str]:
    """Profile flags → argv: true is a bare switch, false/null drop it, lists expand."""
    out: list[str] = []
    for flag, value in args.items():
        if value is None or value is False:
            continue
        out.append(f"--{flag}")
        if value is True:
            continue
        values = value if isinstance(value, list) else [value]
        out += [str(v) for v in values]
    return out


def connection_of(host: Host) -> Connection:
    """How to reach an inventory host (its ansible_* variables)."""
    return Connection(
        address=host.address,
        port=host.port,
        user=host.user,
        key_file=host.key_file,
        become=host.become,
        become_user=host.become_user,
        local=host.is_local,
    )


def _leaders(nodes: list[NodePlan], role: str) -> list[NodePlan]:
    return [n for n in nodes if n.role == role and n.is_leader]


def _worker_url(node: NodePlan, profile: Profile, router_host: str) -> str:
    """The URL the router (and decode nodes, for bootstrap) use to reach a leader."""
    bind = node.bind
    if bind in LOOPBACK and node.host != router_host:
        raise PlanError(
            f"profile {profile.name}: {node.role} listens on {bind} only, so the router on "
            f"{router_host} cannot reach {node.host}; set roles.{node.role}.host to node"
        )
    address = "127.0.0.1" if bind in LOOPBACK else node.address
    return f"http://{host_port(address, node.port)}"


def _plan_router(
    profile: Profile, inventory: Inventory, nodes: list[NodePlan], notes: list[str]
) -> ProcessPlan:
    assert profile.router is not None
    if profile.engine not in PD_ROUTERS:
        raise PlanError(
            f"profile {profile.name}: prefill/decode with {profile.engine} needs a router "
            f"toolkit does not plan yet (it plans {', '.join(PD_ROUTERS)}); use a mixed profile"
        )
    module = PD_ROUTERS[profile.engine]
    spec = profile.router
    chosen = inventory.group("router")
    host = chosen[0] if chosen else inventory.hosts[_leaders(nodes, "prefill")[0].host]
    argv = [host.python, "-m", module, "--pd-disaggregation"]
    for leader in _leaders(nodes, "prefill"):
        argv += [
            "--prefill",
            _worker_url(leader, profile, host.name),
            str(leader.listen["bootstrap"]),
        ]
    for leader in _leaders(nodes, "decode"):
        argv += ["--decode", _worker_url(leader, profile, host.name)]
    argv += ["--host", spec.host, "--port", str(spec.port)]
    if spec.policy:
        argv += ["--policy", spec.policy]
    argv += render_args(spec.args)
    listen = {"http": spec.port, "prometheus": spec.prometheus_port}
    return ProcessPlan(
        host=host.name,
        address=host.address,
        argv=argv,
        python=host.python,
        workdir=host.workdir,
        connection=connection_of(host),
        listen=listen,
        bind=spec.host,
    )


def _endpoint(profile: Profile, nodes: list[NodePlan], router: ProcessPlan | None) -> Endpoint:
    if router is not None:
        assert profile.router is not None
        bind, port = router.bind, profile.router.port
        host, address = router.host, router.address
    else:
        first = nodes[0]
        bind, port, host, address = first.bind, first.port, first.host, first.address
    local = "127.0.0.1" if bind in LOOPBACK or bind in ANY else address
    return Endpoint(host=host, address=address, port=port, local_address=local)


def _plan_bench(
    profile: Profile,
    inventory: Inventory,
    nodes: list[NodePlan],
    router: ProcessPlan | None,
    endpoint: Endpoint,
    notes: list[str],
    model_path: str,
) -> tuple[ProcessPlan, ProcessPlan | None, Endpoint]:
    chosen = inventory.group("bench")
    bench_host = chosen[0] if chosen else inventory.hosts[endpoint.host]
    target = endpoint.local_address
    if bench_host.name != endpoint.host:
        target = endpoint.address
        if router is None and endpoint.local_address in LOOPBACK and not _any_bind(nodes[0]):
            raise PlanError(
                f"profile {profile.name}: the server on {endpoint.host} listens on "
                f"loopback only, so a benchmark on {bench_host.name} cannot reach it; "
                "remove the bench group or set roles.mixed.host to node"
            )
        if router is not None and router.bind in LOOPBACK:
            # The recipe's router listens on 127.0.0.1 because its benchmark runs beside
            # it; a benchmark elsewhere needs it on every interface.
            argv = list(router.argv)
            argv[argv.index("--host") + 1] = "0.0.0.0"
            notes.append(
                f"router listens on 0.0.0.0 (not {router.bind}) because the benchmark "
                f"runs on {bench_host.name}, not on the router host {router.host}"
            )
            router = replace(router, argv=argv, bind="0.0.0.0")
        endpoint = replace(endpoint, local_address=endpoint.address)
    spec = profile.bench
    argv = [bench_host.python, "-m", BENCH_MODULE, "--backend", spec.backend]
    argv += ["--host", url_host(target), "--port", str(endpoint.port)]
    argv += render_args(spec.args)
    if spec.tokenizer == "model_path":
        argv += ["--tokenizer", model_path]
    bench = ProcessPlan(
        host=bench_host.name,
        address=bench_host.address,
        argv=argv,
        python=bench_host.python,
        workdir=bench_host.workdir,
        connection=connection_of(bench_host),
    )
    return bench, router, endpoint


def _any_bind(node: NodePlan) -> bool:
    return node.bind in ANY


def _rehearsal(profile: Profile) -> dict[str, float]:
    spec = profile.rehearsal.model_dump(mode="json")
    if spec["tpot_ms"] is None:
        target = profile.meta.target_tpot_ms
        spec["tpot_ms"] = round(target * 0.8, 3) if target else 20.0
    return spec


def _check_ports(plan: Plan, inventory: Inventory) -> None:
    """Two listeners on one machine, port and address are a plan error, caught early.

    Hosts reached with a local connection are one machine (a local rehearsal spreads its
    "hosts" over 127.0.0.x, so they clash only on the same address or a wildcard bind).
    """
    seen: list[tuple[str, str, int, str]] = []
    listeners: list[tuple[str, str, str, dict[str, int]]] = [
        (n.host, n.bind, f"{n.name} on {n.host}", n.listen) for n in plan.nodes
    ]
    if plan.router is not None:
        router = plan.router
        listeners.append((router.host, router.bind, f"router on {router.host}", router.listen))
    for host_name, bind, who, listen in listeners:
        host = inventory.hosts[host_name]
        machine = "localhost" if host.is_local else host.address
        for purpose, port in listen.items():
            for other_machine, other_bind, other_port, other_who in seen:
                same_addr = bind == other_bind or bind in ANY or other_bind in ANY
                if other_machine == machine and other_port == port and same_addr:
                    raise PlanError(
                        f"port {port} is planned twice on {host.address}: {other_who} and "
                        f"{who} ({purpose}); change one of them with --set"
                    )
            seen.append((machine, bind, port, f"{who} ({purpose})"))
