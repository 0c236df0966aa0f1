"""The collective check's pure half: ranks per instance, and the verdict from worker results.

Like the other preflight judging tests: plans from shipped profiles, results shaped as the
worker prints them (`toolkit/host/collective_worker.py`), findings out, no SSH.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from tests.unit.test_planner import plan_for
from toolkit.executor.collective import launch_command
from toolkit.plan import NodePlan
from toolkit.preflight.collective import (
    MIB,
    Outcome,
    backend_for,
    judge,
    plan_collectives,
    report_lines,
)


def test_a3_instances_rank_every_card_and_carry_the_planned_interface() -> None:
    plan = plan_for("a3-1p1d-64k")
    tests = plan_collectives(plan, "hccl")
    assert [t.name for t in tests] == ["prefill0", "decode0"]
    prefill = tests[0]
    # TP4 x PP8 over 2 nodes: 16 chips per node, ranks 0-15 on the leader.
    assert prefill.world == 32 and prefill.leader == "10.9.1.11"
    ranks = prefill.ranks()
    assert ranks[0].label == "rank 0 (10.9.1.11 NPU 0 via eth0)"
    assert ranks[16].label == "rank 16 (10.9.1.12 NPU 0 via eth0)"
    assert prefill.master_addr == "10.9.1.11" and prefill.port_base == 5001
    assert prefill.parts[1].env["HCCL_SOCKET_IFNAME"] == "eth0"
    assert prefill.sizes == [1 * MIB, 16 * MIB, 64 * MIB, 256 * MIB]


def test_gloo_runs_one_worker_per_node_and_fills_a_detected_nic() -> None:
    plan = plan_for("a3-1p1d-64k")
    # Without `nic` in the inventory the interface comes from the host's facts.
    plan = replace(plan, nodes=[_no_nic(n) for n in plan.nodes])
    tests = plan_collectives(plan, "gloo", {"10.9.1.11": "bond0", "10.9.1.12": "bond0"})
    prefill = tests[0]
    assert prefill.world == 2
    assert [r.label for r in prefill.ranks()] == [
        "rank 0 (10.9.1.11 cpu0 via bond0)",
        "rank 1 (10.9.1.12 cpu0 via bond0)",
    ]
    assert tests[1].ranks()[0].interface == "default"  # decode: nothing detected
    assert prefill.sizes[0] == MIB // 4


def _no_nic(node: NodePlan) -> NodePlan:
    env = {k: v for k, v in node.env.items() if not k.endswith("SOCKET_IFNAME")}
    return replace(node, nic=None, nic_env=["GLOO_SOCKET_IFNAME"], env=env)


def test_cuda_visible_devices_names_the_physical_gpu() -> None:
    plan = plan_for(
        "rtx6000-qwen35-fp8-tp8",
        overrides=("roles.mixed.args.tp-size=2", "env.CUDA_VISIBLE_DEVICES=6,7"),
    )
    (test,) = plan_collectives(plan, "nccl")
    assert [r.device for r in test.ranks()] == ["GPU 6", "GPU 7"]
    assert [r.local for r in test.ranks()] == [0, 1]
    assert test.port_base == plan.nodes[0].port + 1  # one node: no dist-init port


def test_backend_follows_platform_unless_rehearsed_or_asked() -> None:
    assert backend_for("cuda", None, False) == "nccl"
    assert backend_for("ascend", "auto", False) == "hccl"
    assert backend_for("ascend", None, True) == "gloo"
    assert backend_for("cuda", "gloo", False) == "gloo"


def _two_rank_test(min_busbw: float | None = None):
    overrides = ("collective.sizes_mib=[1,16]",)
    if min_busbw is not None:
        overrides += (f"collective.min_busbw_gbps={min_busbw}",)
    return plan_collectives(plan_for("a3-1p1d-64k", overrides=overrides), "gloo")[0]


def _ok(rank: int, seconds: list[float], gather_s: float = 0.01) -> dict:
    sizes = [{"bytes": b, "seconds": s} for b, s in zip((MIB, 16 * MIB), seconds, strict=True)]
    return {"rank": rank, "ok": True, "sizes": sizes, "gather": {"bytes": MIB, "seconds": gather_s}}


def test_bus_bandwidth_latency_and_slowest_rank() -> None:
    test = _two_rank_test()
    outcome = Outcome(ranks={0: _ok(0, [0.001, 0.010]), 1: _ok(1, [0.002, 0.016])})
    findings, summary = judge(test, outcome)
    assert summary["ok"] is True and summary["world"] == 2
    # busbw = bytes / slowest time x 2(n-1)/n; n = 2 → factor 1.
    assert summary["sizes"][1]["busbw_gbps"] == pytest.approx(16 * MIB / 0.016 / 1e9)
    assert summary["latency_us"] == pytest.approx(2000)
    assert summary["all_gather"]["busbw_gbps"] == pytest.approx(MIB / 0.01 / 1e9 / 2)
    assert summary["slowest"]["label"] == "rank 1 (10.9.1.12 cpu0 via eth0)"
    leader = findings[0]
    assert leader.status == "ok" and leader.summary == "2r 1.05 GB/s"
    assert "informational" in leader.detail
    assert report_lines(summary)[0].endswith("1 MiB 0.52, 16 MiB 1.05")


def test_below_the_profiles_bandwidth_fails_with_the_figure() -> None:
    test = _two_rank_test(min_busbw=150)
    outcome = Outcome(ranks={0: _ok(0, [0.001, 0.010]), 1: _ok(1, [0.001, 0.016])})
    findings, summary = judge(test, outcome)
    leader, other = findings
    assert summary["ok"] is False
    assert leader.status == "failed"
    assert "bus bandwidth 1.05 GB/s is below the profile's min_busbw_gbps 150" in leader.detail
    assert other.status == "ok"


def test_a_missing_rank_is_named_by_host_device_and_interface() -> None:
    test = _two_rank_test()
    waited = {"rank": 0, "ok": False, "error": "1 of 2 ranks did not join within 6 s"}
    down = {"rank": 1, "ok": False, "error": "interface eth0 is down"}
    findings, summary = judge(test, Outcome(ranks={0: {**waited, "missing": [1]}, 1: down}))
    leader, other = findings
    assert leader.summary == "ranks missing"
    assert "not joined: rank 1 (10.9.1.12 cpu0 via eth0)" in leader.detail
    assert other.summary == "interface down"
    assert other.detail.endswith("rank 1 (10.9.1.12 cpu0 via eth0): interface eth0 is down")
    assert "ip link set eth0 up" in other.fix
    assert summary["ok"] is False and len(summary["problems"]) == 2


def test_a_host_without_an_answer_fails_alone() -> None:
    test = _two_rank_test()
    outcome = Outcome(
        ranks={0: _ok(0, [0.001, 0.01])}, host_errors={"10.9.1.12": "lost the connection"}
    )
    findings, _ = judge(test, outcome)
    assert [f.status for f in findings] == ["ok", "failed"]
    assert "lost the connection" in findings[1].detail


def test_world_size_one_reports_algorithm_bandwidth_and_never_fails_the_threshold() -> None:
    plan = plan_for(
        "rtx6000-qwen35-fp8-tp8",
        overrides=("roles.mixed.args.tp-size=1", "collective.min_busbw_gbps=100"),
    )
    (test,) = plan_collectives(plan, "nccl")
    sizes = [{"bytes": b, "seconds": 0.001} for b in test.sizes]
    result = {"rank": 0, "ok": True, "sizes": sizes, "gather": {"bytes": MIB, "seconds": 1e-4}}
    findings, summary = judge(test, Outcome(ranks={0: result}))
    assert findings[0].status == "ok" and findings[0].summary == "1r 1000 µs"
    assert "no peers, no data moved" in report_lines(summary)[0]


def test_launch_command_quotes_every_planned_value() -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("env.EVIL=$(touch /tmp/x); `id`",))
    test = plan_collectives(plan, "gloo")[0]
    part = test.parts[1]
    command = launch_command(part, "/opt/py thon/bin/python", "/work dir", test.spec(part, 5001))
    assert "export EVIL='$(touch /tmp/x); `id`'" in command
    assert "'/opt/py thon/bin/python' -u '/work dir/.toolkit-collective/worker-prefill0.1.py'" in (
        command
    )
    assert "if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then ." in command
    # The JSON spec is one quoted word.
    launch = command.split(" launch ", 1)[1].split("; rc=$?")[0]
    assert len(shlex.split(launch)) == 1


def test_the_profile_can_turn_the_check_on_and_the_flag_wins() -> None:
    from toolkit.executor.check import CheckOptions

    plain = plan_for("a3-1p1d-64k")
    asked = plan_for("a3-1p1d-64k", overrides=("collective.by_default=true",))
    assert not CheckOptions().run_collective(plain)
    assert CheckOptions().run_collective(asked)
    assert not CheckOptions(collective=False).run_collective(asked)
    assert CheckOptions(collective=True).run_collective(plain)


def test_the_launcher_names_where_a_killed_worker_was_stuck() -> None:
    from toolkit.host.collective_worker import PHASE, _rank_result, interface_problem

    rank = {"rank": 3, "local": 1, "host": "h2"}
    lines = [PHASE + "rendezvous", PHASE + "join", PHASE + "all-reduce 1048576"]
    stuck = _rank_result(rank, -9, lines, {"deadline": 210.0})
    assert stuck["error"] == "did not finish within 210 s (stuck in all-reduce 1048576)"
    crashed = _rank_result(rank, 1, [PHASE + "init", "Traceback", "RuntimeError: NCCL error"], {})
    assert crashed["error"] == "exited with status 1 in init: Traceback / RuntimeError: NCCL error"
    assert interface_problem("lo") is None
    assert interface_problem("eth,ib") is None  # NCCL prefix lists are not checked
    assert interface_problem("nosuch9").startswith("interface nosuch9 does not exist")


def test_instances_on_disjoint_machines_run_together() -> None:
    from toolkit.executor.cluster import Cluster, host_work
    from toolkit.executor.collective import waves

    plan = plan_for("a3-2p1d-128k-prefix90")
    tests = plan_collectives(plan, "gloo")
    assert [t.name for t in tests] == ["prefill0", "prefill1", "decode0"]
    cluster = Cluster(host_work(plan), None, False)  # type: ignore[arg-type]
    assert [[t.name for t in w] for w in waves(tests, cluster)] == [
        ["prefill0", "prefill1", "decode0"]
    ]
    # Every "host" on this machine (a local rehearsal): one instance at a time.
    for work in cluster.hosts.values():
        work.connection = replace(work.connection, local=True)
    assert [len(w) for w in waves(tests, cluster)] == [1, 1, 1]


def test_ranks_that_fail_alike_are_one_line() -> None:
    test = plan_collectives(plan_for("a3-1p1d-64k"), "hccl")[0]
    waited = "16 of 32 ranks did not join within 30 s"
    ranks = {
        r: {"rank": r, "ok": False, "error": waited, "missing": list(range(16, 32))}
        for r in range(16)
    }
    gone = "cannot reach the rendezvous at 10.9.1.11:5001 within 30 s: timed out"
    ranks |= {r: {"rank": r, "ok": False, "error": gone} for r in range(16, 32)}
    findings, _ = judge(test, Outcome(ranks=ranks))
    leader, other = findings
    assert leader.detail == (
        "prefill0 (hccl, world 32): ranks 0–15 (10.9.1.11 NPU 0–15 via eth0): "
        f"{waited}; not joined: ranks 16–31 (10.9.1.12 NPU 0–15 via eth0)"
    )
    assert other.detail.endswith(f"ranks 16–31 (10.9.1.12 NPU 0–15 via eth0): {gone}")
    assert other.summary == "no rendezvous"
