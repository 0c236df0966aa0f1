"""The Plan: what runs where, as frozen values that print as the public JSON contract.

`toolkit plan --format json` is `Plan.to_json()`; the executor consumes the same object.
Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from toolkit import ports
from toolkit.secrets import mask_argv, mask_env

PLAN_SCHEMA = "toolkit.plan/v1"
WILDCARD = "0.0.0.0"


@dataclass(frozen=True)
class Tuning:
    cpu_governor: str | None = None
    sysctl: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.cpu_governor is None and not self.sysctl


@dataclass(frozen=True)
class Connection:
    """How to reach a host (from the inventory's ansible_* variables)."""

    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    become: bool = False
    become_user: str | None = None
    local: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    """How a node runs in a container image; `toolkit.runtime` renders it for docker/podman.

    `name` holds `{run}`, filled with the run id at launch. `mounts` are host paths mounted
    at the same path (model, workdir, sourced files). `entrypoint` (None: the image's own)
    and `command` are what follows the image on the run command line; the network is always
    the host's, so the plan's addresses and ports hold inside the container.
    """

    runtime: str
    image: str
    pull: str
    name: str
    options: list[str]
    devices: list[str]
    mounts: list[str]
    entrypoint: str | None
    command: list[str]
    python: str


@dataclass(frozen=True)
class NodePlan:
    """One serving process on one host.

    `listen` maps each port this node binds to its purpose (http, bootstrap, dist_init).
    """

    host: str
    address: str
    role: str
    instance: int
    node_rank: int
    nnodes: int
    leader: str
    port: int
    env: dict[str, str]
    unset_env: list[str]
    source: list[str]
    tuning: Tuning
    argv: list[str]
    listen: dict[str, int]
    bind: str
    python: str
    workdir: str
    connection: Connection
    nic: str | None = None
    # Variables to set to the NIC when `nic` is not known yet (detected at `up`).
    nic_env: list[str] = field(default_factory=list)
    # None: a process on the host; otherwise the container it runs in.
    container: ContainerPlan | None = None

    @property
    def is_leader(self) -> bool:
        return self.node_rank == 0

    @property
    def name(self) -> str:
        return f"{self.role}{self.instance}.{self.node_rank}"


@dataclass(frozen=True)
class ProcessPlan:
    """The router or the benchmark client on one host."""

    host: str
    address: str
    argv: list[str]
    python: str
    workdir: str
    connection: Connection
    listen: dict[str, int] = field(default_factory=dict)
    bind: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """Where clients send requests: the router (PD) or the rank-0 server (mixed)."""

    host: str
    address: str
    port: int
    # The address a client on the endpoint's own host uses (the router may listen on
    # 127.0.0.1 only).
    local_address: str

    @property
    def url(self) -> str:
        return f"http://{url_host(self.address)}:{self.port}"


@dataclass(frozen=True)
class Plan:
    profile: str
    meta: dict[str, Any]
    engine: str
    platform: str
    mode: str
    model_path: str
    nodes: list[NodePlan]
    router: ProcessPlan | None
    bench: ProcessPlan
    endpoint: Endpoint
    slo: list[dict[str, Any]]
    rehearsal: dict[str, Any]
    readiness_timeout_s: float
    inventory: str
    notes: list[str] = field(default_factory=list)
    collective: dict[str, Any] = field(default_factory=dict)  # the profile's `collective`
    # The profile's bench.client ("sglang" or "vllm"); None: chosen on the bench host.
    bench_client: str | None = None
    # The profile's extra roles per play id of the up playbook (user roles).
    plays: dict[str, list[str]] = field(default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        """Every host the plan touches, in first-use order."""
        names = [n.host for n in self.nodes]
        for proc in (self.router, self.bench):
            if proc is not None:
                names.append(proc.host)
        return list(dict.fromkeys(names))

    def connection(self, host: str) -> Connection:
        for item in (*self.nodes, self.router, self.bench):
            if item is not None and item.host == host:
                return item.connection
        raise KeyError(host)

    def nodes_on(self, host: str) -> list[NodePlan]:
        return [n for n in self.nodes if n.host == host]

    def listeners(self, host: str) -> list[Listener]:
        """Every port this run binds on `host` (see `listeners`)."""
        return listeners(self, host)

    def to_dict(self, mask: bool = True) -> dict[str, Any]:
        """The JSON contract; secret env values and secret flag values (`--api-key X`) are
        masked unless `mask` is False."""
        data = asdict(self)
        data = {"schema": PLAN_SCHEMA, **data}
        for node, raw in zip(self.nodes, data["nodes"], strict=True):
            raw["name"] = node.name
            raw["is_leader"] = node.is_leader
        if mask:
            for raw in [*data["nodes"], data["router"], data["bench"]]:
                if raw is not None:
                    raw["env"] = mask_env(raw["env"])
                    raw["argv"] = mask_argv(raw["argv"])
        data["endpoint"]["url"] = self.endpoint.url
        return data

    def to_json(self, mask: bool = True) -> str:
        return json.dumps(self.to_dict(mask=mask), indent=2)


@dataclass(frozen=True)
class Listener:
    """A port this run binds on one host: `check` and `up` need it free before launch,
    `down` waits until it is free again. `setting` is the `--set` that moves it."""

    port: int
    bind: str
    purpose: str
    setting: str

    def arg(self) -> dict[str, Any]:
        """The agent's form (`ports_free`, `stop`)."""
        return {"port": self.port, "bind": self.bind, "purpose": self.purpose}


def listeners(plan: Plan, host: str) -> list[Listener]:
    """Every port this run binds on `host`, with the address it binds.

    The one list `check` (ports row), `up` (`ports_free`) and `down` (`stop` waits for
    them to be free) use. Per port, who binds it and where:

    - each node's `listen` (http on every node except a vLLM headless one; bootstrap on a
      prefill leader): at the node's bind address;
    - dist-init, on an instance's leader only: every interface, whatever the node's bind,
      since torch's TCPStore server (sglang) and vLLM's data-parallel master listen on the
      wildcard; the dist-init address only tells the other nodes where to dial;
    - the router's http at its bind (every interface when unset), its prometheus port on
      every interface;
    - the MemFabric config store (Ascend PD): created by the engine on the host of the
      prefill leader named in ASCEND_MF_STORE_URL, so a port of this run on that host;
      taken as every interface, since a holder on any address makes the store fail;
    - HCCL's 16 host-NIC ports (Ascend): each serving host's engine binds them for its
      collectives for the whole run; none when the range is `auto` (HCCL picks).

    Example, a3-1p1d-64k with prefill p1 p2, decode d1 d2 and the router on p1, on p1:
    8000 http (prefill bind), 8998 bootstrap, 5000 dist-init (0.0.0.0), 6688 router http,
    29000 router prometheus, 24670 MemFabric store, 60000-60015 HCCL; on d2: 8001 http and
    60000-60015 HCCL.
    """
    found: list[Listener] = []
    nodes = plan.nodes_on(host)
    for node in nodes:
        for purpose, port in node.listen.items():
            bind = WILDCARD if purpose == "dist_init" else node.bind
            key = {"http": "port", "bootstrap": "bootstrap_port"}.get(purpose, f"{purpose}_port")
            label = f"{node.name} {purpose.replace('_', '-')}"
            found.append(Listener(port, bind, label, f"roles.{node.role}.{key}"))
    router = plan.router
    if router is not None and router.host == host:
        for purpose, port in router.listen.items():
            bind = (router.bind or WILDCARD) if purpose == "http" else WILDCARD
            key = "port" if purpose == "http" else f"{purpose}_port"
            found.append(Listener(port, bind, f"router {purpose}", f"router.{key}"))
    store = mf_store(plan)
    if store is not None and store[0] == host:
        found.append(Listener(store[2], WILDCARD, "MemFabric store", "mf_store_port"))
    if nodes and plan.platform == "ascend":
        found += _hccl_ports(nodes[0])
    return found


HCCL_PURPOSE = "HCCL host port"


def _hccl_ports(node: NodePlan) -> list[Listener]:
    """HCCL's host-NIC ports: 16 from HCCL_IF_BASE_PORT (60000), or the explicit range
    HCCL_HOST_SOCKET_PORT_RANGE ("60000-60015,60100"), which overrides the base."""
    spec = node.env.get("HCCL_HOST_SOCKET_PORT_RANGE", "")
    numbers: list[int] = []
    if spec and spec.strip() != "auto":
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            if low.isdigit() and (high or low).isdigit():
                numbers += range(int(low), int(high or low) + 1)
    elif not spec:
        base = node.env.get("HCCL_IF_BASE_PORT", "")
        start = int(base) if base.isdigit() else ports.HCCL_BASE
        numbers = list(range(start, start + ports.HCCL_COUNT))
    return [Listener(p, WILDCARD, HCCL_PURPOSE, "env.HCCL_IF_BASE_PORT") for p in numbers]


def mf_store(plan: Plan) -> tuple[str, str, int] | None:
    """(host, address, port) of the MemFabric config store, from ASCEND_MF_STORE_URL: the
    host of the instance leader that holds the URL's address."""
    url = next(
        (n.env["ASCEND_MF_STORE_URL"] for n in plan.nodes if n.env.get("ASCEND_MF_STORE_URL")), None
    )
    if not url:
        return None
    try:
        parts = urlsplit(url)
        address, port = parts.hostname, parts.port
    except ValueError:
        return None
    holder = next((n for n in plan.nodes if n.address == address and n.is_leader), None)
    if holder is None or port is None:
        return None
    return holder.host, address, port


# ----------------------------------------------------------------------------- hosts


@dataclass
class HostWork:
    """Everything one host does in a run."""

    name: str
    connection: Connection
    python: str
    workdir: str
    nodes: list[NodePlan] = field(default_factory=list)
    router: bool = False
    bench: bool = False

    @property
    def serving(self) -> bool:
        return bool(self.nodes)

    @property
    def tag(self) -> str:
        """The TOOLKIT_HOST value in each process's environment: `down` finds a run's
        processes by it, and name@address stays unique where hosts share a process table
        (a local rehearsal, test namespaces)."""
        return f"{self.name}@{self.connection.address}"

    @property
    def machine(self) -> str:
        """Hosts reached locally are one machine (one kernel to tune), whatever address."""
        return "localhost" if self.connection.local else self.connection.address


def host_work(plan: Plan) -> dict[str, HostWork]:
    work: dict[str, HostWork] = {}
    for node in plan.nodes:
        item = work.setdefault(
            node.host, HostWork(node.host, node.connection, node.python, node.workdir)
        )
        item.nodes.append(node)
    for kind, proc in (("router", plan.router), ("bench", plan.bench)):
        if proc is None:
            continue
        item = work.setdefault(
            proc.host, HostWork(proc.host, proc.connection, proc.python, proc.workdir)
        )
        setattr(item, kind, True)
    return work


def url_host(address: str) -> str:
    """Bracket IPv6 literals for URLs and host:port strings."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def host_port(address: str, port: int) -> str:
    return f"{url_host(address)}:{port}"


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuild a Plan from its JSON form (run records store the plan this way)."""

    def conn(raw: dict[str, Any]) -> Connection:
        return Connection(**raw)

    def proc(raw: dict[str, Any] | None) -> ProcessPlan | None:
        if raw is None:
            return None
        return ProcessPlan(**{**raw, "connection": conn(raw["connection"])})

    nodes = []
    for raw in data["nodes"]:
        fields = {k: v for k, v in raw.items() if k not in ("name", "is_leader")}
        fields["tuning"] = Tuning(**raw["tuning"])
        fields["connection"] = conn(raw["connection"])
        if raw.get("container"):
            fields["container"] = ContainerPlan(**raw["container"])
        nodes.append(NodePlan(**fields))
    endpoint = {k: v for k, v in data["endpoint"].items() if k != "url"}
    bench = proc(data["bench"])
    assert bench is not None
    return Plan(
        **{
            **{k: v for k, v in data.items() if k != "schema"},
            "nodes": nodes,
            "router": proc(data["router"]),
            "bench": bench,
            "endpoint": Endpoint(**endpoint),
        }
    )
