"""What `toolkit check` derives from a plan alone: TCP paths, cards, translation (the
ports are the plan's own: test_plan_listeners.py).

Plans come from the shipped profiles on a plain inventory (prefill 10.9.1.x, decode
10.9.2.x, as in test_planner); nothing here touches a host.
"""

from __future__ import annotations

import pytest

from tests.unit.test_planner import plan_for
from toolkit.plan import mf_store
from toolkit.preflight.check_flags import (
    cache_key,
    options_from_json,
    options_to_json,
    translate_plan,
)
from toolkit.preflight.check_plan import cards_per_node, node_model_path, routes
from toolkit.profiles import available, load_profile

P1, P2, D1, D2 = "10.9.1.11", "10.9.1.12", "10.9.2.11", "10.9.2.12"


def test_routes_of_the_worked_example() -> None:
    plan = plan_for("a3-1p1d-64k")
    found = {(r.source, r.target, r.address, r.port, r.purpose) for r in routes(plan)}
    assert found == {
        (P2, P1, P1, 5000, "prefill0.0 dist-init"),
        (P2, P1, P1, 8998, "prefill0.0 bootstrap"),
        (D1, P1, P1, 8998, "prefill0.0 bootstrap"),
        (D2, P1, P1, 8998, "prefill0.0 bootstrap"),
        (D2, D1, D1, 5000, "decode0.0 dist-init"),
        (P2, P1, P1, 24670, "MemFabric store"),
        (D1, P1, P1, 24670, "MemFabric store"),
        (D2, P1, P1, 24670, "MemFabric store"),
    }
    assert mf_store(plan) == (P1, P1, 24670)


def test_decode_dials_the_address_the_router_hands_out() -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("roles.prefill.host=127.0.0.1",))
    boot = {(r.source, r.address, r.bind) for r in routes(plan) if "bootstrap" in r.purpose}
    loop = "127.0.0.1"
    assert boot == {(P2, P1, loop), (D1, loop, loop), (D2, loop, loop)}


def test_every_prefill_instance_is_dialed_by_every_decode_host() -> None:
    plan = plan_for("a3-2p1d-128k-prefix90")
    prefill = [n for n in plan.nodes if n.role == "prefill" and n.is_leader]
    leaders = {n.host: n.listen["bootstrap"] for n in prefill}
    assert sorted(leaders.values()) == [8998, 8999]
    for decode in (n for n in plan.nodes if n.role == "decode"):
        dialed = {(r.target, r.port) for r in routes(plan) if r.source == decode.host}
        assert set(leaders.items()) <= dialed


@pytest.mark.parametrize("name", sorted(available()))
def test_cards_per_node_add_up_to_the_recipe_and_model_path_is_found(name: str) -> None:
    plan = plan_for(name)
    assert plan.nodes
    ranks = sum(cards_per_node(plan, node) for node in plan.nodes)
    # Recipes count boards: an Atlas A3 NPU carries two chips, each takes a rank.
    chips_per_card = 2 if plan.platform == "ascend" else 1
    assert ranks == load_profile(name).meta.cards * chips_per_card
    assert all(node_model_path(node, plan) == "/models/m" for node in plan.nodes)


def test_cards_per_node_examples() -> None:
    pp = plan_for("a3-1p1d-64k")  # prefill TP4 x PP8 over 2 nodes; decode TP32 DP-attn
    assert [cards_per_node(pp, n) for n in pp.nodes] == [16, 16, 16, 16]
    gb = plan_for("gb200-glm5-nvfp4-1p4d")  # TP16/DP16 with DP attention over 4 nodes
    assert {cards_per_node(gb, n) for n in gb.nodes} == {4}


def test_cache_key_needs_a_version_and_a_hash() -> None:
    assert cache_key("sglang", "0.5.23", "ab" * 32) == f"sglang-0.5.23-{'ab' * 10}"
    assert cache_key("sglang", "0.5.23", None) is None
    assert cache_key("vllm", None, "ab") is None


def test_options_survive_the_json_round_trip(sglang_options) -> None:
    again = options_from_json(options_to_json(sglang_options))
    assert again == sglang_options
    assert len(again.option_strings) == 559


def test_translate_plan_rewrites_each_node_and_records_notes(sglang_options) -> None:
    plan = plan_for("a3-1p1d-64k")
    translated, changes = translate_plan(plan, dict.fromkeys(plan.hosts, sglang_options))
    prefill = translated.nodes[0].argv
    assert (
        "--enable-prefill-cp" in prefill and "--enable-nsa-prefill-context-parallel" not in prefill
    )
    assert prefill[prefill.index("--cp-strategy") + 1] == "zigzag"
    assert "--moe-dense-tp-size" in prefill and "--moe-dense-tp" not in prefill
    decode = translated.nodes[2].argv
    assert "--prefill-round-robin-balance" not in decode
    assert decode.count("--load-balance-method") == 1
    # Ambiguous on 0.5.23; the known meaning (decode graph batch sizes) is applied.
    assert "--cuda-graph-bs" not in decode
    i = decode.index("--cuda-graph-bs-decode")
    assert decode[i + 1 : i + 4] == ["1", "2", "3"]
    assert changes["prefill0.1"] == changes["prefill0.0"] and len(changes["prefill0.0"]) == 3
    notes = [n for n in translated.notes if n.startswith("--translate-flags")]
    assert notes[0] == (
        "--translate-flags for sglang 0.5.23 (prefill0.0, prefill0.1): "
        "--enable-nsa-prefill-context-parallel → --enable-prefill-cp: renamed in sglang 0.5.23"
    )
    assert len(notes) == 5  # 3 prefill changes, 2 decode (cuda-graph-bs, round-robin)
    assert plan.nodes[0].argv != prefill  # the input plan is unchanged
    again, more = translate_plan(translated, dict.fromkeys(plan.hosts, sglang_options))
    assert again.nodes == translated.nodes and not any(more.values())


def test_hosts_without_options_keep_their_argv(sglang_options) -> None:
    plan = plan_for("a3-1p1d-64k")
    translated, changes = translate_plan(plan, {P1: sglang_options})
    assert translated.nodes[1].argv == plan.nodes[1].argv
    assert set(changes) == {"prefill0.0"}
