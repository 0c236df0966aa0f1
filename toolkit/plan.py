"""The Plan: what runs where, as frozen values that print as the public JSON contract.

`toolkit plan --format json` is `Plan.to_json()`; the executor consumes the same object.
Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from toolkit.secrets import mask_argv, mask_env

PLAN_SCHEMA = "toolkit.plan/v1"


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
