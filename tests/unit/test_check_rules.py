"""The preflight's judging, from facts as the probe reports them (no SSH), like pyinfra's
operation tests: a healthy cluster's facts, one fault changed at a time, the findings.

The accelerator cases feed recorded `npu-smi info` and `nvidia-smi` outputs
(tests/fixtures/preflight) through the probe's `npu_smi` / `nvidia_smi` sections.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_planner import plan_for
from toolkit.executor.cluster import host_work
from toolkit.plan import Plan
from toolkit.preflight.check_cluster import Context, judge
from toolkit.preflight.check_facts import HostFacts, majority
from toolkit.preflight.check_flags import translate_plan
from toolkit.preflight.check_plan import routes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"
P1, P2, D1, D2 = "10.9.1.11", "10.9.1.12", "10.9.2.11", "10.9.2.12"
WORKDIR = "/var/tmp/toolkit"
SOURCES = ["/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh"]


def probe(address: str, **sections: Any) -> dict[str, Any]:
    """A healthy host's probe output (the shape `toolkit.host.probe.probe` returns)."""
    facts: dict[str, Any] = {
        "probe_version": 1,
        "python": {"executable": "/usr/bin/python3", "version": "3.11.7"},
        "packages": {
            "sglang": {"version": "0.5.23", "path": "/venv/sglang"},
            "sglang-router": {"version": "0.3.2", "path": "/venv/sglang_router"},
            "vllm": {"version": None, "path": None},
        },
        "sglang_source": {"path": "/venv/sglang", "server_args_sha256": "ab" * 32},
        "listening": [{"family": 4, "address": "0.0.0.0", "port": 22, "inode": 1}],
        "interfaces": {
            "source": "ip",
            "interfaces": [
                {"name": "lo", "ipv4": ["127.0.0.1/8"], "ipv6": ["::1/128"]},
                {"name": "eth0", "ipv4": [f"{address}/24"], "ipv6": []},
            ],
        },
        "disk": {WORKDIR: {"checked": "/var/tmp", "free_bytes": 80 * 10**9}},
        "model_dir": {
            "path": "/models/m",
            "exists": True,
            "is_dir": True,
            "file_count": 3,
            "total_bytes": 3000,
            "broken_links": 0,
            "files": ["config.json", "model-1.safetensors", "model-2.safetensors"],
        },
        "files": {path: {"exists": True, "is_file": True} for path in SOURCES},
        "npu_smi": {"found": False, "path": None},
        "nvidia_smi": {"found": False, "path": None},
    }
    facts.update(sections)
    return facts


def healthy(plan: Plan) -> dict[str, HostFacts]:
    return {
        host: HostFacts(host, probe=probe(host), python="python3", uid=0, clock_offset=0.01)
        for host in plan.hosts
    }


def findings(plan: Plan, facts: dict[str, HostFacts], **ctx: Any) -> dict[tuple[str, str], Any]:
    reach = ctx.pop("reach", {r.key: {"ok": True} for r in routes(plan)})
    context = Context(plan=plan, hosts=host_work(plan), facts=facts, reach=reach, **ctx)
    return {(f.host, f.check): f for f in judge(context)}


def failed(found: dict) -> dict[tuple[str, str], Any]:
    return {key: f for key, f in found.items() if f.status == "failed"}


@pytest.fixture
def plan() -> Plan:
    return plan_for("a3-1p1d-64k", extra="", overrides=())


def test_a_healthy_cluster_passes(plan: Plan) -> None:
    found = findings(plan, healthy(plan), options={h: "no options given" for h in plan.hosts})
    assert failed(found) == {}
    assert found[(P1, "engine")].summary == "0.5.23"
    assert found[(P1, "router")].summary == "0.3.2" and (P2, "router") not in found
    assert found[(P1, "ports")].summary == "22 free"
    assert found[(P1, "nic")].summary == "eth0"
    assert found[(D2, "reach")].summary == "3 ok"
    assert found[(P1, "model")].summary == "3 files, 3.0 KB"
    skipped = {key for key, f in found.items() if f.status == "skipped"}
    assert {check for _, check in skipped} == {"accel", "flags"}
    assert "npu-smi not found on 10.9.1.11" in found[(P1, "accel")].detail


def test_rehearse_skips_accelerators_model_and_flags_and_says_so(plan: Plan) -> None:
    facts = healthy(plan)
    for fact in facts.values():
        fact.probe["files"] = {}
        fact.probe.pop("model_dir")
    found = findings(plan, facts, rehearse=True)
    assert failed(found) == {}
    for check, why in (
        ("accel", "a rehearsal needs no accelerators"),
        ("model", "a rehearsal loads no weights"),
        ("flags", "the stand-in engine takes any flag"),
    ):
        assert (found[(D1, check)].status, found[(D1, check)].detail) == ("skipped", why)
    assert "a rehearsal sources only the scripts that exist" in found[(D1, "env")].detail


# ----------------------------------------------------------------------------- accelerators


@pytest.mark.parametrize(
    ("fixture", "status", "summary", "text"),
    [
        ("npu_smi_a3_16chips.txt", "ok", "16/16", "8 NPUs / 16 chips (Ascend910)"),
        ("npu_smi_a2_910b_8npus.txt", "failed", "8/16", "need 16 cards, found 8 NPUs"),
    ],
)
def test_recorded_npu_smi_against_the_need(plan, fixture, status, summary, text) -> None:
    facts = healthy(plan)
    output = (FIXTURES / fixture).read_text()
    facts[P1].probe["npu_smi"] = {"found": True, "rc": 0, "stdout": output}
    found = findings(plan, facts)[(P1, "accel")]
    assert (found.status, found.summary) == (status, summary)
    assert text in found.detail


def test_recorded_nvidia_smi_against_the_need() -> None:
    output = (FIXTURES / "nvidia_smi_8gpus.csv").read_text()
    for tp, status in ((8, "ok"), (16, "failed")):
        plan = plan_for("rtx6000-qwen35-fp8-tp8", overrides=(f"roles.mixed.args.tp-size={tp}",))
        facts = healthy(plan)
        host = plan.hosts[0]
        facts[host].probe["nvidia_smi"] = {"found": True, "rc": 0, "stdout": output}
        found = findings(plan, facts)[(host, "accel")]
        assert (found.status, found.summary) == (status, f"8/{tp}")
    assert "need 16 cards, found 8 GPUs" in found.detail


def test_a_failing_or_hung_tool_fails(plan: Plan) -> None:
    facts = healthy(plan)
    facts[P1].probe["npu_smi"] = {"found": True, "rc": 8, "stderr": "dcmi init failed"}
    facts[P2].probe["npu_smi"] = {"found": True, "timed_out": True, "timeout": 20.0}
    found = findings(plan, facts)
    assert found[(P1, "accel")].detail == "npu-smi exited with status 8: dcmi init failed"
    assert found[(P2, "accel")].summary == "npu-smi hung"


# ----------------------------------------------------------------------------- ports


def test_a_held_port_names_host_port_purpose_and_fix(plan: Plan) -> None:
    facts = healthy(plan)
    facts[P1].probe["listening"].append({"family": 4, "address": P1, "port": 8998, "inode": 2})
    facts[D1].probe["listening"].append({"family": 6, "address": "::", "port": 60003, "inode": 3})
    # Same port on another address of the host: no conflict with a bind on P2.
    facts[P2].probe["listening"].append({"family": 4, "address": "127.0.0.1", "port": 8000})
    found = failed(findings(plan, facts))
    assert set(found) == {(P1, "ports"), (D1, "ports")}
    assert found[(P1, "ports")].detail == (
        f"port 8998 (prefill0.0 bootstrap) is in use on {P1}: something listens on {P1}:8998"
    )
    assert "--set roles.prefill.bootstrap_port=<port>" in found[(P1, "ports")].fix
    assert "(HCCL host port)" in found[(D1, "ports")].detail
    assert "HCCL_IF_BASE_PORT" in found[(D1, "ports")].fix


# ----------------------------------------------------------------------------- model, drift


def test_model_missing_different_and_broken(plan: Plan) -> None:
    facts = healthy(plan)
    facts[P2].probe["model_dir"] = {"path": "/models/m", "exists": False}
    facts[D1].probe["model_dir"]["files"] = ["config.json", "model-1.safetensors"]
    facts[D1].probe["model_dir"].update(file_count=2, total_bytes=2000)
    facts[D2].probe["model_dir"]["broken_links"] = 1
    found = failed(findings(plan, facts))
    assert set(found) == {(P2, "model"), (D1, "model"), (D2, "model")}
    assert found[(P2, "model")].detail == f"{P2}: model_path /models/m does not exist"
    assert found[(D1, "model")].detail == (
        f"/models/m: 2 files, 2.0 KB, unlike {P1} (missing model-2.safetensors; 2 files vs 3; "
        "2000 bytes vs 3000)"
    )
    assert found[(D2, "model")].summary == "broken links"


def test_engine_versions_that_differ_fail_on_every_serving_host(plan: Plan) -> None:
    facts = healthy(plan)
    facts[D1].probe["packages"]["sglang"]["version"] = "0.5.9"
    facts[D2].probe["packages"]["sglang"]["version"] = "0.5.9"
    found = failed(findings(plan, facts))
    assert set(found) == {(h, "engine") for h in (P1, P2, D1, D2)}
    listing = f"{P1} → 0.5.23, {P2} → 0.5.23, {D1} → 0.5.9, {D2} → 0.5.9"
    assert (
        found[(D1, "engine")].detail == f"sglang versions differ between serving hosts: {listing}"
    )
    assert found[(D1, "engine")].summary == "0.5.9 ≠ 0.5.23"
    fix = f"install one version everywhere: pip install sglang==0.5.23 on {D1}, {D2}"
    assert found[(P1, "engine")].fix == fix


def test_majority_prefers_the_commonest_then_the_newest() -> None:
    assert majority(["0.5.9", "0.5.23", "0.5.9"]) == "0.5.9"
    assert majority(["0.5.9", "0.5.23"]) == "0.5.23"


def test_missing_packages_and_python(plan: Plan) -> None:
    facts = healthy(plan)
    facts[P1].probe["packages"]["sglang-router"]["version"] = None
    facts[D1].probe["packages"]["sglang"]["version"] = None
    facts[D2].python, facts[D2].python_missing = "/opt/py/bin/python", True
    found = findings(plan, facts)
    assert failed(found).keys() == {(P1, "router"), (D1, "engine"), (D2, "python")}
    assert found[(P1, "router")].fix.startswith(f"pip install sglang-router with python3 on {P1}")
    assert found[(D2, "python")].detail.startswith("/opt/py/bin/python was not found on")
    assert found[(D2, "engine")].status == "skipped"
    rehearsal = findings(plan, facts, rehearse=True)
    assert rehearsal[(D1, "engine")].status == "skipped"  # a rehearsal does not need it


# ----------------------------------------------------------------------------- host facts


def test_clock_skew_beyond_one_second(plan: Plan) -> None:
    facts = healthy(plan)
    facts[D2].clock_offset, facts[D2].clock_error = 3.4, 0.05
    facts[D1].clock_offset, facts[D1].clock_error = 1.2, 0.5  # within the measurement error
    found = findings(plan, facts)
    assert failed(found).keys() == {(D2, "clock")}
    assert "+3.4 s off the other hosts" in found[(D2, "clock")].detail


def test_nic_exists_and_holds_the_address(plan: Plan) -> None:
    facts = healthy(plan)  # the inventory sets nic: eth0 everywhere
    facts[P1].probe["interfaces"]["interfaces"][1]["name"] = "enp23s0f3"
    facts[P2].probe["interfaces"]["interfaces"][1]["ipv4"] = ["192.168.0.5/24"]
    facts[P2].probe["interfaces"]["interfaces"].append({"name": "ib0", "ipv4": [f"{P2}/24"]})
    found = failed(findings(plan, facts))
    assert found.keys() == {(P1, "nic"), (P2, "nic")}
    assert found[(P1, "nic")].detail == (
        f"interface eth0 does not exist on {P1} (it has: enp23s0f3, lo)"
    )
    assert found[(P1, "nic")].fix == f"set nic: enp23s0f3 for {P1}"
    assert found[(P2, "nic")].detail.startswith(f"eth0 does not hold {P2}; {P2} is on ib0")


def test_nic_is_detected_when_the_inventory_names_none() -> None:
    local = plan_for("a3-mixed-3k5")
    facts = healthy(local)
    for fact in facts.values():  # a local rehearsal: 127.0.0.x all live on lo's /8
        fact.probe["interfaces"]["interfaces"] = [{"name": "lo", "ipv4": ["127.0.0.1/8"]}]
    nodes = [replace(n, nic=None, address="127.0.0.2") for n in local.nodes]
    local = replace(local, nodes=nodes)
    found = findings(local, facts)
    host = local.hosts[0]
    assert found[(host, "nic")].summary == "lo"
    assert "lo covers 127.0.0.2 (in 127.0.0.1/8)" in found[(host, "nic")].detail


def test_sudo_disk_and_environment_scripts(plan: Plan) -> None:
    facts = healthy(plan)
    refused = "sudo: a password is required"
    facts[P1].uid, facts[P1].sudo_needed, facts[P1].sudo = 1000, True, refused
    facts[P2].uid = 1000  # no become, but tuning needs root
    facts[D1].uid, facts[D1].sudo_needed, facts[D1].sudo = 1000, True, "ok"
    facts[D2].probe["disk"][WORKDIR]["free_bytes"] = 10**8
    facts[D2].probe["files"][SOURCES[1]] = {"exists": False}
    found = findings(plan, facts)
    assert failed(found).keys() == {(P1, "sudo"), (P2, "sudo"), (D2, "disk"), (D2, "env")}
    assert "sudo -n true` failed: sudo: a password is required" in found[(P1, "sudo")].detail
    assert "set ansible_become: true" in found[(P2, "sudo")].fix
    assert found[(D1, "sudo")].summary == "sudo -n"
    assert found[(D2, "disk")].detail.startswith("only 100.0 MB free")
    assert found[(D2, "env")].detail == f"missing on {D2}: {SOURCES[1]}"


def test_unreachable_host_shows_only_ssh(plan: Plan) -> None:
    facts = healthy(plan)
    facts[D2] = HostFacts(D2, unreachable=f"{D2}:22: No route to host")
    found = findings(plan, facts)
    assert [key for key in found if key[0] == D2] == [(D2, "ssh")]
    assert found[(D2, "ssh")].status == "failed"
    assert found[(D1, "reach")].status == "ok"


def test_reach_outcomes(plan: Plan) -> None:
    reach = {r.key: {"ok": True} for r in routes(plan)}
    blocked = next(r for r in routes(plan) if r.source == D1 and r.port == 8998)
    reach[blocked.key] = {"ok": False, "error": "connection refused"}
    held = next(r for r in routes(plan) if r.source == D2 and r.port == 5000)
    reach[held.key] = {"skipped": "cannot listen: Address already in use (held: see ports)"}
    found = findings(plan, healthy(plan), reach=reach)
    assert failed(found).keys() == {(D1, "reach")}
    assert found[(D1, "reach")].detail == (
        f"{D1} → {P1} {P1}:8998 (prefill0.0 bootstrap): connection refused"
    )
    assert found[(D1, "reach")].fix.startswith(f"open TCP 8998 on {P1} to {D1}")
    assert found[(D2, "reach")].summary == "2 ok"
    assert "Address already in use" in found[(D2, "reach")].detail


# ----------------------------------------------------------------------------- flags


def test_seed003_flags_against_sglang_0_5_23(plan: Plan, sglang_options) -> None:
    options = dict.fromkeys(plan.hosts, sglang_options)
    found = findings(plan, healthy(plan), options=options)
    assert failed(found).keys() == {(h, "flags") for h in (P1, P2, D1, D2)}
    assert found[(P1, "flags")].summary == "2 rejected"
    assert "renamed to --cp-strategy zigzag (in-seq-split → zigzag)" in found[(P1, "flags")].detail
    assert "--translate-flags" in found[(P1, "flags")].fix
    assert "--translate-flags" in found[(D1, "flags")].fix  # every decode problem is known

    translated, changes = translate_plan(plan, options)
    found = findings(translated, healthy(translated), options=options, translations=changes)
    assert failed(found) == {}
    note = "prefill0.0: translated --moe-dense-tp 1 → --moe-dense-tp-size 1"
    assert f"{note}: abbreviation of --moe-dense-tp-size" in found[(P1, "flags")].notes


def test_facts_are_not_shared_between_builders(plan: Plan) -> None:
    one, two = healthy(plan), healthy(plan)
    one[P1].probe["listening"].append({"port": 1})
    assert two[P1].probe["listening"] == copy.deepcopy(probe(P1))["listening"]
