"""Every seed-003 recipe, run per node, launches exactly what toolkit plans for that node.

The recipe's own bash script is executed once per node with `hostname -I` answering that
node's address and with `python3`, `sysctl`, `tee`, `source` and `unset` replaced by
recorders, so the comparison is against what the recipe really does (its arrays, index
arithmetic and exports), not against a transcription of it. Planned differences are
explicit below: the corrections each profile documents.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support.argv import flag_items
from tests.support.seed_recipes import SEED_003, Recipe, load_recipes
from toolkit.inventory import parse_inventory
from toolkit.plan import Plan
from toolkit.planner import build_plan
from toolkit.profiles import load_profile

PROFILES_IN_SEED_ORDER = [
    "a3-mixed-3k5",
    "a3-1p1d-128k",
    "a3-1p1d-16k",
    "a3-1p1d-64k-lowlat",
    "a3-1p1d-64k",
    "a3-1p1d-65k-prefix90",
    "a3-1p1d-65k-prefix100",
    "a3-2p1d-128k-prefix90",
    "a3-4p1d-64k-prefix90",
]
NIC = "enp23s0f3"
MODEL = "/models/glm-5.1-w4a8"
RECIPES = load_recipes()
CASES = list(zip(PROFILES_IN_SEED_ORDER, RECIPES, strict=False))
pytestmark = pytest.mark.skipif(SEED_003 is None, reason="../shared/seeds is not present")

STUBS = r"""
__log=$TK_LOG
hostname() { echo "$TK_IP 192.0.2.254"; }
tee() { local v; read -r v; printf 'governor\t%s\t%s\n' "$v" "$*" >> "$__log"; }
sysctl() { printf 'sysctl\t%s\n' "$*" >> "$__log"; }
source() { printf 'source\t%s\n' "$1" >> "$__log"; }
unset() { printf 'unset\t%s\n' "$*" >> "$__log"; builtin unset "$@"; }
python3() { env -0 > "$TK_ENV"; printf '%s\0' "$@" > "$TK_ARGV"; }
env -0 > "$TK_BASE"
"""


def test_every_seed_recipe_has_a_profile() -> None:
    assert len(RECIPES) == len(PROFILES_IN_SEED_ORDER) == 9
    for name, recipe in CASES:
        assert load_profile(name).meta.seed_section == recipe.heading


def _inventory_for(profile_name: str) -> str:
    profile = load_profile(profile_name)
    lines = [
        "all:",
        f"  vars: {{model_path: {MODEL}, nic: {NIC}}}",
        "  children:",
    ]
    for subnet, role in enumerate(("prefill", "decode", "mixed"), start=1):
        if role in profile.roles:
            count = profile.roles[role].nnodes * profile.roles[role].instances
            hosts = ", ".join(f"10.9.{subnet}.{11 + i}: {{}}" for i in range(count))
            lines.append(f"    {role}: {{hosts: {{{hosts}}}}}")
    return "\n".join(lines) + "\n"


def _plan(profile_name: str) -> Plan:
    inventory = parse_inventory(_inventory_for(profile_name), "inv.yaml")
    return build_plan(inventory, load_profile(profile_name))


def _fill_deploy(script: str, plan: Plan) -> str:
    prefill = [n.address for n in plan.nodes if n.role == "prefill"]
    decode = [n.address for n in plan.nodes if n.role == "decode"]
    script = re.sub(r"<your prefill ip(\d)>", lambda m: prefill[int(m.group(1)) - 1], script)
    script = re.sub(r"<your decode ip(\d)>", lambda m: decode[int(m.group(1)) - 1], script)
    return script.replace("<network-interface>", NIC).replace("/path/to/model-weights", MODEL)


def _run_recipe_on(node_address: str, script: str, tmp: Path) -> dict:
    files = {k: tmp / k for k in ("log", "env", "argv", "base")}
    for f in files.values():
        f.unlink(missing_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "http_proxy": "http://proxy.invalid:3128",
        "HTTPS_PROXY": "http://proxy.invalid:3128",
        "TK_IP": node_address,
        **{f"TK_{k.upper()}": str(v) for k, v in files.items()},
    }
    subprocess.run(
        ["bash", "-c", STUBS + script], env=env, check=True, capture_output=True, timeout=30
    )
    log = [line.split("\t") for line in files["log"].read_text().splitlines()]
    return {
        "argv": files["argv"].read_text().split("\0")[:-1],
        "env": _exported(files["base"], files["env"]),
        "unset": [w for kind, *rest in log if kind == "unset" for w in rest[0].split()],
        "source": [rest[0] for kind, *rest in log if kind == "source"],
        "governor": {rest[0] for kind, *rest in log if kind == "governor"},
        "sysctl": dict(
            rest[0].removeprefix("-w ").split("=", 1) for kind, *rest in log if kind == "sysctl"
        ),
    }


def _exported(base: Path, at_launch: Path) -> dict[str, str]:
    def parse(path: Path) -> dict[str, str]:
        items = (e.split("=", 1) for e in path.read_text().split("\0") if "=" in e)
        return dict(items)

    before, after = parse(base), parse(at_launch)
    return {k: v for k, v in after.items() if before.get(k) != v and not k.startswith("TK_")}


@pytest.mark.parametrize(("profile_name", "recipe"), CASES, ids=[c[0] for c in CASES])
def test_each_node_launches_what_the_recipe_launches(
    profile_name: str, recipe: Recipe, tmp_path: Path
) -> None:
    plan = _plan(profile_name)
    script = _fill_deploy(recipe.deploy, plan)
    assert plan.nodes, "the plan has no nodes"
    for node in plan.nodes:
        seen = _run_recipe_on(node.address, script, tmp_path)
        assert seen["argv"][:2] == ["-m", "sglang.launch_server"]
        assert node.argv[0] == "python3" and node.argv[1:3] == seen["argv"][:2]
        expected = flag_items(seen["argv"])
        if profile_name == "a3-mixed-3k5":
            # Correction: --nnodes 2 without a rendezvous; toolkit adds it.
            leader = plan.nodes[0].address
            expected[("--dist-init-addr", (f"{leader}:5000",))] += 1
            expected[("--node-rank", (str(node.node_rank),))] += 1
        if profile_name == "a3-1p1d-65k-prefix100" and node.role == "decode":
            # Correction: the recipe repeats --enable-dp-attention; planned once.
            assert expected[("--enable-dp-attention", ())] == 2
            expected[("--enable-dp-attention", ())] = 1
        assert flag_items(node.argv) == expected, node.name
        assert node.env == seen["env"], node.name
        assert node.unset_env == seen["unset"]
        assert node.source == seen["source"]
        assert {node.tuning.cpu_governor} == {g.split("\t")[0] for g in seen["governor"]}
        assert node.tuning.sysctl == seen["sysctl"]


def _router_argv(recipe: Recipe, plan: Plan) -> list[str]:
    leaders = [n.address for n in plan.nodes if n.role == "prefill" and n.is_leader]
    decode = [n.address for n in plan.nodes if n.role == "decode"]
    text = recipe.router or ""
    text = text.replace("<your prefill ip>", leaders[0])
    # The fix: "<your prefill ipK>" is the leader of prefill instance K.
    text = re.sub(r"<your prefill ip(\d)>", lambda m: leaders[int(m.group(1)) - 1], text)
    text = re.sub(r"<your decode ip(\d)>", lambda m: decode[int(m.group(1)) - 1], text)
    return shlex.split(text.replace("\\\n", " "), comments=True)


@pytest.mark.parametrize(("profile_name", "recipe"), CASES, ids=[c[0] for c in CASES])
def test_router_and_bench_match_the_recipe(profile_name: str, recipe: Recipe) -> None:
    plan = _plan(profile_name)
    if recipe.router is None:
        assert plan.router is None
    else:
        assert plan.router is not None
        argv = _router_argv(recipe, plan)
        assert argv[:3] == ["python", "-m", "sglang_router.launch_router"]
        assert plan.router.argv[1:3] == argv[1:3]
        assert flag_items(plan.router.argv) == flag_items(argv)
        assert plan.router.host == plan.nodes[0].host  # the first prefill leader
    bench = shlex.split(recipe.bench.replace("\\\n", " "))
    assert plan.bench.argv[1:3] == bench[1:3] == ["-m", "sglang.bench_serving"]
    planned = flag_items(plan.bench.argv)
    # Addition: the router has no /model_info, so the tokenizer is named explicitly.
    assert planned.pop(("--tokenizer", (MODEL,))) == 1
    assert planned == flag_items(bench)
    assert plan.bench.host == plan.endpoint.host


def test_2p1d_router_points_at_the_second_instance_leader() -> None:
    plan = _plan("a3-2p1d-128k-prefix90")
    assert plan.router is not None
    prefill = [n.address for n in plan.nodes if n.role == "prefill"]
    argv = plan.router.argv
    urls = [argv[i + 1 : i + 3] for i, tok in enumerate(argv) if tok == "--prefill"]
    assert urls == [[f"http://{prefill[0]}:8000", "8998"], [f"http://{prefill[2]}:8000", "8999"]]
    # The recipe as literally written would point at prefill host 2 (rank 1 of instance 0).
    assert f"http://{prefill[1]}:8000" not in argv
