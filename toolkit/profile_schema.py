"""The profile schema: what a recipe may say, validated with precise errors.

A profile is data: engine flags are a mapping `flag-name: value` (true for a bare switch,
a list for several values, false/null to drop a flag inherited from a base). Topology
flags (`--host`, `--port`, `--node-rank`, `--nnodes`, `--dist-init-addr`,
`--disaggregation-mode`, `--disaggregation-bootstrap-port`, the model path) are not written
as flags: the planner derives them per node from the fields below, so they can never
disagree with the inventory.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from toolkit import names

Scalar = str | int | float | bool
# Names that end up unquoted in launch scripts (`export NAME=`, `unset NAME`), checked where
# they enter: a profile file or `--set env.NAME=...`.
EnvName = Annotated[str, AfterValidator(names.check_env_name)]
SysctlName = Annotated[str, AfterValidator(names.check_sysctl)]
RoleName = Annotated[str, AfterValidator(names.check_role)]
# Paths that scripts source: any text but control characters.
ScriptPath = Annotated[str, AfterValidator(lambda v: names.check_text(v, "path"))]
FlagValue = Scalar | list[Scalar] | None
# Flags the planner owns; writing them in `args` would let a profile contradict the plan.
PLANNED_FLAGS = frozenset(
    {
        "host",
        "port",
        "node-rank",
        "nnodes",
        "dist-init-addr",
        "nccl-init-addr",
        "disaggregation-mode",
        "disaggregation-bootstrap-port",
        "model-path",
        "model",
    }
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Meta(Strict):
    """What the recipe is, for `toolkit profiles` and reports."""

    title: str
    model: str
    hardware: str
    # 0 for a CPU profile (platform cpu): no accelerator is counted.
    cards: int = Field(ge=0)
    mode: Literal["pd", "mixed"]
    dataset: str
    quantization: str | None = None
    target_tpot_ms: float | None = None
    seed: str
    seed_section: str | None = None
    corrections: list[str] = []


class Tuning(Strict):
    cpu_governor: str | None = None
    sysctl: dict[SysctlName, Scalar] = {}


class ServerRole(Strict):
    """How one group of hosts (prefill, decode or mixed) is launched."""

    nnodes: int = Field(1, ge=1)
    instances: int = Field(1, ge=1)
    # "node": the node's own address; a literal such as 0.0.0.0 or 127.0.0.1; null: omit.
    host: str | None = "node"
    port: int | None = Field(None, ge=1, le=65535)
    dist_init_port: int | None = Field(None, ge=1, le=65535)
    # Prefill only: instance k listens on bootstrap_port + k.
    bootstrap_port: int | None = Field(None, ge=1, le=65535)
    # "auto": pass --node-rank/--nnodes only when nnodes > 1; "always": also for 1 node.
    rank_flags: Literal["auto", "always"] = "auto"
    # null drops a variable inherited from a base profile.
    env: dict[EnvName, Scalar | None] = {}
    args: dict[str, FlagValue] = {}

    @field_validator("args")
    @classmethod
    def _no_planned_flags(cls, args: dict[str, FlagValue]) -> dict[str, FlagValue]:
        for flag in args:
            if flag.startswith("-"):
                raise ValueError(f"write flag names without dashes: {flag.lstrip('-')!r}")
            if flag in PLANNED_FLAGS:
                raise ValueError(
                    f"--{flag} is planned per node from the inventory; set it through the "
                    "role's host/port/nnodes/dist_init_port/bootstrap_port fields instead"
                )
        return args


class Router(Strict):
    host: str = "0.0.0.0"
    port: int = Field(30000, ge=1, le=65535)
    # The router's Prometheus listener; used for port checks, passed only if in args.
    prometheus_port: int = Field(29000, ge=1, le=65535)
    policy: str | None = None
    args: dict[str, FlagValue] = {}


class Bench(Strict):
    # The server's protocol, bench_serving's --backend (vllm: OpenAI completions).
    backend: str = "sglang"
    # Which client runs: SGLang's bench_serving or `vllm bench serve`; null: the engine's
    # own client where installed on the bench host, else the other (said in the output).
    client: Literal["sglang", "vllm"] | None = None
    # Dataset and load shape, as bench_serving flags (without dashes).
    args: dict[str, FlagValue] = {}
    # "model_path": pass --tokenizer with the deployment's model path (the router has no
    # /model_info, so bench_serving cannot discover it); null: do not pass it.
    tokenizer: Literal["model_path"] | None = "model_path"


class Slo(Strict):
    """A bound on one bench_serving metric: `max` for latencies, `min` for throughputs."""

    metric: str
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Slo:
        if (self.max is None) == (self.min is None):
            raise ValueError(f"slo {self.metric}: give exactly one of max or min")
        return self


class Rehearsal(Strict):
    """Timing of the simulated engine used by `up --rehearse`."""

    load_seconds: float = 2.0
    tpot_ms: float | None = None  # default: 80% of the target TPOT, else 20 ms
    tpot_slope_ms: float = 0.0
    prefill_tokens_per_s: float = 20000.0
    ttft_base_ms: float = 30.0


class Collective(Strict):
    """`toolkit check --collective`: what to run and what bandwidth to expect."""

    # Run it in `check` and `up` without --collective (--no-collective skips it).
    by_default: bool = False
    # Bus bandwidth (GB/s, nccl-tests' busbw) below which an instance fails; null: report only.
    min_busbw_gbps: float | None = Field(None, gt=0)
    sizes_mib: list[float] | None = None  # default by backend (1..256 MiB on accelerators)
    iters: int | None = Field(None, ge=1)
    join_timeout_s: float = Field(30.0, gt=0)  # every rank must join within this
    op_timeout_s: float = Field(120.0, gt=0)


class Container(Strict):
    """Run each serving node inside a container image (docker or podman) instead of on the host.

    `options` are the recipe's run options, one option per item (`--gpus all`, `--ipc host`);
    `devices` holds the ones that need the accelerator (GPUs, NPU device files, driver
    mounts), left out by a rehearsal. `entrypoint: command` replaces the image's entrypoint
    with the planned argv run by `python`; `image` keeps it and passes what follows the
    engine's command (an image whose entrypoint is `vllm serve` gets the model and flags).
    """

    runtime: Literal["docker", "podman", "none"] = "none"
    image: str | None = None
    # Shown when `image` is missing: where the recipe's image comes from.
    image_hint: str | None = None
    pull: Literal["missing", "always", "never"] = "missing"
    options: list[str] = []
    devices: list[str] = []
    entrypoint: Literal["command", "image"] = "command"
    python: str = "python3"


class Profile(Strict):
    name: str
    meta: Meta
    engine: Literal["sglang", "vllm"]
    # cpu: the engines' CPU builds (smoke tests of a cluster's wiring, no accelerator).
    platform: Literal["ascend", "cuda", "cpu"]
    model_path: str | None = None
    # The spelling of the model flag (recipes use --model-path or --model); vLLM takes the
    # model as a positional argument after `serve`.
    model_flag: str | None = "--model-path"
    tuning: Tuning = Tuning()
    unset_env: list[EnvName] = []
    source: list[ScriptPath] = []
    env: dict[EnvName, Scalar | None] = {}
    # Environment variables set to the node's network interface (from `nic`).
    nic_env: list[EnvName] = []
    # Environment variables set to the node's own address (SGLANG_HOST_IP, VLLM_HOST_IP): the
    # address an engine advertises to its peers (KV bootstrap, mooncake, vLLM's RPC). Unset,
    # an engine guesses from the host's interfaces and may pick one its peers cannot reach.
    host_ip_env: list[EnvName] = []
    # Ascend PD: ASCEND_MF_STORE_URL=tcp://<first prefill leader>:<port> on every node.
    mf_store_port: int | None = Field(None, ge=1, le=65535)
    roles: dict[Literal["prefill", "decode", "mixed"], ServerRole]
    router: Router | None = None
    bench: Bench = Bench()
    slo: list[Slo] = []
    rehearsal: Rehearsal = Rehearsal()
    collective: Collective = Collective()
    readiness_timeout_s: float = Field(3600.0, gt=0)
    container: Container = Container()
    # Extra roles per play of `up`'s playbook, by play id, run after the play's own roles
    # (`plays: {prepare: [site_nfs, engine_wheel]}`); found with --roles-dir.
    plays: dict[RoleName, list[RoleName]] = {}

    @model_validator(mode="after")
    def _roles_fit_mode(self) -> Profile:
        roles = set(self.roles)
        if self.meta.mode == "pd":
            if roles != {"prefill", "decode"}:
                raise ValueError("a pd profile has exactly the roles prefill and decode")
            if self.router is None:
                raise ValueError("a pd profile needs a router section")
        elif roles != {"mixed"}:
            raise ValueError("a mixed profile has exactly one role: mixed")
        if (self.meta.cards == 0) != (self.platform == "cpu"):
            raise ValueError("meta.cards is 0 exactly when platform is cpu")
        for name, role in self.roles.items():
            if role.nnodes > 1 and role.dist_init_port is None:
                raise ValueError(
                    f"roles.{name}: nnodes {role.nnodes} needs dist_init_port "
                    "(the rank-0 rendezvous port for --dist-init-addr)"
                )
            if name == "prefill" and role.bootstrap_port is None:
                raise ValueError("roles.prefill needs bootstrap_port")
        return self

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
