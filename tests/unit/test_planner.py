"""Planner: topology, ports, wiring and validation over every shipped profile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from toolkit.errors import PlanError, ProfileError
from toolkit.inventory import parse_inventory
from toolkit.plan import Plan
from toolkit.planner import build_plan
from toolkit.profiles import available, load_profile
from toolkit.render.scripts import write_scripts

SHIPPED = sorted(available())


def inventory_text(profile_name: str, extra: str = "", hosts_vars: str = "{}") -> str:
    profile = load_profile(profile_name)
    lines = ["all:", "  vars: {model_path: /models/m, nic: eth0}", "  children:"]
    for subnet, role in enumerate(("prefill", "decode", "mixed"), start=1):
        if role in profile.roles:
            count = profile.roles[role].nnodes * profile.roles[role].instances
            hosts = ", ".join(f"10.9.{subnet}.{11 + i}: {hosts_vars}" for i in range(count))
            lines.append(f"    {role}: {{hosts: {{{hosts}}}}}")
    return "\n".join(lines) + "\n" + extra


# Seed 004's image tag is truncated in the seed: its profile needs one given (a stand-in here).
IMAGE_STAND_IN = "registry.example/vllm:b12x"


def with_image(profile_name: str, overrides: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`overrides`, plus a stand-in image where the profile runs a container but names none."""
    container = load_profile(profile_name, overrides).container
    if container.runtime != "none" and not container.image:
        return (*overrides, f"container.image={IMAGE_STAND_IN}")
    return overrides


def plan_for(profile_name: str, extra: str = "", overrides: tuple[str, ...] = ()) -> Plan:
    inv = parse_inventory(inventory_text(profile_name, extra), "inv.yaml")
    return build_plan(inv, load_profile(profile_name, with_image(profile_name, overrides)))


def test_there_are_profiles_to_test() -> None:
    assert len(SHIPPED) >= 9


@pytest.mark.parametrize("name", SHIPPED)
def test_topology_invariants_hold_for_every_profile(name: str) -> None:
    plan = plan_for(name)
    profile = load_profile(name)
    for role_name, role in profile.roles.items():
        nodes = [n for n in plan.nodes if n.role == role_name]
        assert len(nodes) == role.nnodes * role.instances
        for node in nodes:
            leader = next(n for n in nodes if n.host == node.leader)
            assert leader.is_leader and leader.instance == node.instance
            assert node.node_rank == nodes.index(node) % role.nnodes
            if role.nnodes > 1 and profile.engine == "vllm":  # data parallel, see below
                i = node.argv.index("--data-parallel-address")
                assert node.argv[i + 1] == leader.address
            elif role.nnodes > 1:
                i = node.argv.index("--dist-init-addr")
                assert node.argv[i + 1] == f"{leader.address}:{role.dist_init_port}"
                assert node.argv[node.argv.index("--node-rank") + 1] == str(node.node_rank)
            if role_name == "prefill":
                i = node.argv.index("--disaggregation-bootstrap-port")
                assert node.argv[i + 1] == str(role.bootstrap_port + node.instance)
    # One listener per (host, port).
    seen = set()
    for node in plan.nodes:
        for port in node.listen.values():
            assert (node.host, port) not in seen
            seen.add((node.host, port))
    if plan.router is not None:
        prefill_leaders = [n for n in plan.nodes if n.role == "prefill" and n.is_leader]
        argv = plan.router.argv
        wired = [argv[i + 1 : i + 3] for i, t in enumerate(argv) if t == "--prefill"]
        assert wired == [
            [f"http://{n.address}:{n.port}", str(n.listen["bootstrap"])] for n in prefill_leaders
        ]
        decode = [argv[i + 1] for i, t in enumerate(argv) if t == "--decode"]
        assert decode == [
            f"http://{n.address}:{n.port}" for n in plan.nodes if n.role == "decode" and n.is_leader
        ]


@pytest.mark.parametrize("name", SHIPPED)
def test_json_contract(name: str) -> None:
    data = json.loads(plan_for(name).to_json())
    assert data["profile"] == name
    assert data["schema"] == "toolkit.plan/v1"
    for node in data["nodes"]:
        for key in ("host", "role", "instance", "node_rank", "nnodes", "env", "unset_env"):
            assert key in node
        assert set(node["tuning"]) == {"cpu_governor", "sysctl"}
        assert node["argv"][1] == "-m"
        assert all(isinstance(v, str) for v in node["env"].values())
    assert data["bench"]["argv"][1:3] == ["-m", "sglang.bench_serving"]
    assert (data["router"] is None) == (load_profile(name).meta.mode == "mixed")


@pytest.mark.parametrize("name", SHIPPED)
def test_sh_scripts_pass_bash_n(name: str, tmp_path: Path) -> None:
    paths = write_scripts(plan_for(name), tmp_path)
    assert len(paths) >= 2
    for path in paths:
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_sh_values_are_quoted_against_injection(tmp_path: Path) -> None:
    plan = plan_for(
        "a3-1p1d-64k",
        overrides=("roles.decode.env.EVIL=$(touch /tmp/pwned); echo hi",),
    )
    paths = write_scripts(plan, tmp_path)
    decode = next(p for p in paths if "decode0.0" in p.name)
    assert "export EVIL='$(touch /tmp/pwned); echo hi'" in decode.read_text()


def test_secrets_are_masked_in_json_and_read_from_env_in_sh(tmp_path: Path) -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("env.HF_TOKEN=hf_abcdef123",))
    assert "hf_abcdef123" not in plan.to_json()
    assert "hf_abcdef123" in plan.to_json(mask=False)
    for path in write_scripts(plan, tmp_path):
        assert "hf_abcdef123" not in path.read_text()


def test_host_count_error_matches_the_documented_message() -> None:
    text = """
all:
  vars: {model_path: /m}
  children:
    prefill: {hosts: {p1: {}, p2: {}, p3: {}}}
    decode: {hosts: {d1: {}, d2: {}}}
"""
    with pytest.raises(PlanError) as err:
        build_plan(
            parse_inventory(text, "inventory/my.yaml"), load_profile("a3-2p1d-128k-prefix90")
        )
    assert str(err.value).startswith(
        "profile a3-2p1d-128k-prefix90 needs prefill hosts in instances of 2 nodes "
        "(2 instances: 4 hosts); inventory/my.yaml has 3 prefill hosts"
    )


def test_missing_model_path_says_where_to_set_it() -> None:
    text = (
        "all:\n  children:\n    prefill: {hosts: {p1: {}, p2: {}}}\n"
        "    decode: {hosts: {d1: {}, d2: {}}}\n"
    )
    with pytest.raises(
        PlanError, match=r"set `model_path: /models/\.\.\.` under all.vars in i.yaml"
    ):
        build_plan(parse_inventory(text, "i.yaml"), load_profile("a3-1p1d-64k"))


def test_mixed_hosts_with_a_pd_profile_are_refused() -> None:
    text = inventory_text("a3-1p1d-64k") + ""
    text = text.replace("  children:\n", "  children:\n    mixed: {hosts: {m1: {}}}\n")
    with pytest.raises(PlanError, match="lists mixed hosts"):
        build_plan(parse_inventory(text, "i.yaml"), load_profile("a3-1p1d-64k"))


def test_port_clash_on_one_host_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match=r"port 8000 is planned twice on 10\.9\.1\.11"):
        plan_for("a3-1p1d-64k", overrides=("router.port=8000", "router.host=0.0.0.0"))


def test_router_and_bench_groups_move_the_processes() -> None:
    extra = "    router: {hosts: {r1: {ansible_host: 10.9.9.1}}}\n"
    extra += "    bench: {hosts: {b1: {ansible_host: 10.9.9.2}}}\n"
    plan = plan_for("a3-1p1d-64k", extra=extra)
    assert plan.router is not None and plan.router.host == "r1"
    assert plan.bench.host == "b1"
    # The recipe's router listens on 127.0.0.1 for a bench beside it; here it cannot.
    assert plan.router.argv[plan.router.argv.index("--host") + 1] == "0.0.0.0"
    assert plan.bench.argv[plan.bench.argv.index("--host") + 1] == "10.9.9.1"
    assert any("0.0.0.0" in note for note in plan.notes)


def test_missing_nic_is_left_for_detection() -> None:
    text = inventory_text("a3-1p1d-64k").replace(", nic: eth0", "")
    plan = build_plan(parse_inventory(text, "i.yaml"), load_profile("a3-1p1d-64k"))
    node = plan.nodes[0]
    assert node.nic is None
    assert node.nic_env == ["GLOO_SOCKET_IFNAME", "HCCL_SOCKET_IFNAME"]
    assert "HCCL_SOCKET_IFNAME" not in node.env


def test_local_rehearsal_hosts_share_a_machine_but_not_addresses() -> None:
    text = """
all:
  vars: {ansible_connection: local, model_path: /m}
  children:
    prefill: {hosts: {p1: {ansible_host: 127.0.0.1}, p2: {ansible_host: 127.0.0.2}}}
    decode: {hosts: {d1: {ansible_host: 127.0.0.3}, d2: {ansible_host: 127.0.0.4}}}
"""
    plan = build_plan(parse_inventory(text, "local.yaml"), load_profile("a3-1p1d-64k"))
    assert [n.bind for n in plan.nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_cpu_profiles_set_the_engine_host_address_per_node() -> None:
    plan = plan_for("cpu-sglang-pd")
    for node in plan.nodes:
        assert node.env["SGLANG_HOST_IP"] == node.address
    assert plan.platform == "cpu" and plan.meta["cards"] == 0
    assert plan.router is not None and plan.router.argv[1:4] == [
        "-m",
        "sglang_router.launch_router",
        "--pd-disaggregation",
    ]
    assert "--pd-separated" in plan.bench.argv
    vllm = plan_for("cpu-vllm").nodes[0]
    assert vllm.env["VLLM_HOST_IP"] == vllm.address
    assert vllm.argv[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", "/models/m"]


def test_vllm_pd_is_refused_until_its_router_is_planned() -> None:
    overrides = ("engine=vllm", "model_flag=null")
    with pytest.raises(PlanError, match=r"prefill/decode with vllm needs a router"):
        plan_for("cpu-sglang-pd", overrides=overrides)


def test_zero_cards_only_on_cpu() -> None:
    with pytest.raises(ProfileError, match=r"meta.cards is 0 exactly when platform is cpu"):
        load_profile("cpu-sglang", ("platform=cuda",))


def test_vllm_over_two_nodes_is_a_head_and_a_headless_engine() -> None:
    plan = plan_for("cpu-vllm-dp")
    head, headless = plan.nodes
    dp = ["--data-parallel-size", "2", "--data-parallel-size-local", "1"]
    dp += ["--data-parallel-address", head.address, "--data-parallel-rpc-port", "13345"]
    assert " ".join(dp) in " ".join(head.argv)
    assert "--headless" not in head.argv and head.listen == {"http": 8000, "dist_init": 13345}
    joined = " ".join(headless.argv)
    assert "--headless --data-parallel-start-rank 1 " + " ".join(dp) in joined
    assert headless.listen == {}  # no HTTP server, no rendezvous of its own
    assert "--node-rank" not in joined and "--dist-init-addr" not in joined
    assert plan.endpoint.host == head.host
