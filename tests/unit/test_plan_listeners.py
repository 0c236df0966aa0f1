"""`Plan.listeners`: the one list of ports a run binds per host, read by check (ports row),
up (`ports_free`) and down (`stop` waits for them to be free).

Why: the list existed three times and the copies disagreed (dist-init's bind address, the
MemFabric store, HCCL's ports); a port left out of one copy was never checked free before
launch or never waited for at `down`. Plans come from shipped profiles on a plain inventory
(prefill 10.9.1.x, decode 10.9.2.x, as in test_planner); nothing here touches a host.
"""

from __future__ import annotations

from tests.unit.test_planner import plan_for
from tests.unit.test_playbooks import _host, _run
from toolkit.executor.up import UpOptions, load_up_plays
from toolkit.plan import HCCL_PURPOSE, host_work
from toolkit.playbook.engine import compile_host, play_roles
from toolkit.playbook.load import RoleSearch, load_playbook, playbook_path
from toolkit.preflight.check_facts import HostFacts
from toolkit.preflight.check_rules import ports_free

P1, P2, D1, D2 = "10.9.1.11", "10.9.1.12", "10.9.2.11", "10.9.2.12"


def test_the_worked_example_a3_1p1d_64k() -> None:
    plan = plan_for("a3-1p1d-64k")
    p1 = {(p.port, p.bind, p.purpose) for p in plan.listeners(P1) if p.purpose != HCCL_PURPOSE}
    assert p1 == {
        (8000, P1, "prefill0.0 http"),
        # torch's TCPStore listens on every interface, whatever the node's --host.
        (5000, "0.0.0.0", "prefill0.0 dist-init"),
        (8998, P1, "prefill0.0 bootstrap"),
        (6688, "127.0.0.1", "router http"),
        (29000, "0.0.0.0", "router prometheus"),
        (24670, "0.0.0.0", "MemFabric store"),
    }
    hccl = sorted(p.port for p in plan.listeners(D2) if p.purpose == HCCL_PURPOSE)
    assert hccl == list(range(60000, 60016))
    # A non-leader binds only its own http: no dist-init, no store.
    assert [p.purpose for p in plan.listeners(D2) if p.port < 60000] == ["decode0.1 http"]
    settings = {p.purpose: p.setting for p in plan.listeners(P1)}
    assert settings["prefill0.0 bootstrap"] == "roles.prefill.bootstrap_port"
    assert settings["router prometheus"] == "router.prometheus_port"
    assert settings["MemFabric store"] == "mf_store_port"


def test_hccl_ports_follow_the_environment() -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("env.HCCL_IF_BASE_PORT=61000",))
    hccl = [p.port for p in plan.listeners(D1) if p.purpose == HCCL_PURPOSE]
    assert (min(hccl), max(hccl), len(hccl)) == (61000, 61015, 16)
    ranged = plan_for("a3-1p1d-64k", overrides=("env.HCCL_HOST_SOCKET_PORT_RANGE=60100-60102",))
    assert [p.port for p in ranged.listeners(D1) if p.purpose == HCCL_PURPOSE] == [
        60100,
        60101,
        60102,
    ]
    auto = plan_for("a3-1p1d-64k", overrides=("env.HCCL_HOST_SOCKET_PORT_RANGE=auto",))
    assert not [p for p in auto.listeners(D1) if p.purpose == HCCL_PURPOSE]


def test_a_cuda_profile_has_no_hccl_and_no_store() -> None:
    plan = plan_for("gb200-glm5-nvfp4-1p4d")
    every = [p for host in plan.hosts for p in plan.listeners(host)]
    assert every, "the profile plans no port at all"
    assert not [p for p in every if p.purpose in (HCCL_PURPOSE, "MemFabric store")]
    # Every node's http is there, each at its node's bind address.
    http = {(n.host, n.port, n.bind) for n in plan.nodes if "http" in n.listen}
    found = {(h, p.port, p.bind) for h in plan.hosts for p in plan.listeners(h)}
    assert http <= found
    dist = [p for p in every if p.purpose.endswith("dist-init")]
    assert dist and {p.bind for p in dist} == {"0.0.0.0"}


def test_check_up_and_down_use_the_same_list() -> None:
    plan = plan_for("a3-1p1d-64k")
    work = host_work(plan)[P1]
    want = [{"port": p.port, "bind": p.bind, "purpose": p.purpose} for p in plan.listeners(P1)]
    run = _run(plan)
    preflight = dict((p.id, r) for p, r in load_up_plays(plan, UpOptions()))["preflight"]
    ops = [op for step in compile_host(preflight, _host(run, P1), run)[0] for op in step.ops]
    assert next(op for op in ops if op.module == "ports_free").args["ports"] == want
    down = load_playbook(playbook_path("down"), {"engine": plan.engine, "platform": plan.platform})
    stop = next(p for p in down if p.id == "stop")
    steps, _ = compile_host(play_roles(stop, RoleSearch()), _host(run, P1), run)
    assert next(op for s in steps for op in s.ops if op.module == "stop").args["ports"] == want
    # check: a holder on another address of the store port still fails (wildcard bind).
    facts = HostFacts(P1, probe={"listening": [{"address": "10.9.9.9", "port": 24670}]})
    finding = ports_free(plan, work, facts)
    assert finding is not None and finding.status == "failed"
    assert "port 24670 (MemFabric store) is in use" in finding.detail
    assert "--set mf_store_port=<port>" in finding.fix
