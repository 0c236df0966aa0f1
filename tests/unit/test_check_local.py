"""The check's host side and its orchestration, run for real on this machine.

Hosts with `ansible_connection: local` start the same agent (and run the same shell
commands) as SSH hosts, through bash; so the probe, the listener, the dialer, the flag
extractor and the whole `check()` are exercised here without SSH, on loopback addresses
only. Every planned port
is moved to a port free right now, so a rehearsal running beside the tests cannot collide.
"""

from __future__ import annotations

import socket
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.engines import SGLANG_DIR
from toolkit.executor import check_remote as remote
from toolkit.executor.check import CheckOptions, _probe, check
from toolkit.executor.cluster import host_work
from toolkit.executor.session import Session
from toolkit.host.protocol import Op, Result
from toolkit.inventory import parse_inventory
from toolkit.plan import Connection, Plan
from toolkit.planner import build_plan
from toolkit.preflight.check_facts import HostFacts
from toolkit.profiles import load_profile

ADDRESSES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]


def local_session(python: str = sys.executable) -> Session:
    return Session("local", Connection(address="127.0.0.1", local=True), python)


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("0.0.0.0", 0))
        return [sock.getsockname()[1] for sock in socks]


def local_plan(tmp_path: Path) -> Plan:
    """a3-1p1d-64k on four loopback "hosts", every port moved to a free one."""
    hosts = [f"h{i}: {{ansible_host: {a}}}" for i, a in enumerate(ADDRESSES, 1)]
    inventory = (
        "all:\n"
        f"  vars: {{ansible_connection: local, python: {sys.executable}, "
        f"workdir: {tmp_path}, model_path: {tmp_path}/model}}\n"
        "  children:\n"
        f"    prefill: {{hosts: {{{hosts[0]}, {hosts[1]}}}}}\n"
        f"    decode: {{hosts: {{{hosts[2]}, {hosts[3]}}}}}\n"
    )
    ports = free_ports(8)
    keys = [
        "roles.prefill.port", "roles.decode.port", "roles.prefill.bootstrap_port",
        "roles.prefill.dist_init_port", "roles.decode.dist_init_port", "router.port",
        "router.prometheus_port", "mf_store_port",
    ]  # fmt: skip
    overrides = [f"{key}={port}" for key, port in zip(keys, ports, strict=True)]
    overrides[4] = f"roles.decode.dist_init_port={ports[3]}"  # one rendezvous port
    overrides.append(f"env.HCCL_HOST_SOCKET_PORT_RANGE={free_ports(1)[0]}")
    profile = load_profile("a3-1p1d-64k", tuple(overrides))
    return build_plan(parse_inventory(inventory, str(tmp_path / "inv.yaml")), profile)


def test_check_on_local_hosts_passes_then_names_a_held_port(tmp_path: Path) -> None:
    plan = local_plan(tmp_path)
    report = check(plan, CheckOptions(rehearse=True))
    assert report.ok, [(f.host, f.check, f.detail) for f in report.failures]
    by_cell = {(f.host, f.check): f for f in report.findings}
    assert by_cell[("h1", "ssh")].summary == "local"
    assert by_cell[("h4", "reach")].status == "ok"  # dist-init, bootstrap, store
    assert report.elapsed_s < 20
    decode_http = plan.nodes[2].port
    with socket.socket() as held:
        held.bind((ADDRESSES[2], decode_http))
        held.listen()
        report = check(plan, CheckOptions(rehearse=True))
    assert [(f.host, f.check) for f in report.failures] == [("h3", "ports")]
    assert f"port {decode_http} (decode0.0 http) is in use on h3" in report.failures[0].detail


def test_probe_falls_back_to_python3_and_reads_clock_and_uid(tmp_path: Path) -> None:
    plan = local_plan(tmp_path)
    work = host_work(plan)["h1"]
    work.python = "/nonexistent/python3"
    facts = HostFacts("h1", python=work.python)
    _probe(local_session("/nonexistent/python3"), work, plan, False, facts)
    assert facts.python_missing and facts.probe is not None
    assert facts.uid is not None and abs(facts.clock_offset) < 1
    assert facts.package("sglang") == {}  # unknown: it was another interpreter's
    assert facts.probe["model_dir"]["exists"] is False


def _one(session: Session, op: Op) -> Result:
    results = session.agent([op], login=True)
    assert len(results) == 1, results
    return results[0]


def test_listener_answers_with_its_nonce_and_dialer_classifies() -> None:
    port, closed = free_ports(2)
    session = local_session()
    spec = [{"id": "a", "bind": "127.0.0.1", "port": port, "nonce": "n1"}]
    try:
        started = _one(session, Op("reach_listen", {"listen": spec, "lifetime": 20, "token": "t"}))
        assert started.data["bound"] == ["a"] and started.data["token"] == "t"
        targets = [
            {"id": "good", "address": "127.0.0.1", "port": port, "nonce": "n1"},
            {"id": "other", "address": "127.0.0.1", "port": port, "nonce": "n2"},
            {"id": "closed", "address": "127.0.0.1", "port": closed, "nonce": "x"},
        ]
        found = _one(session, Op("reach_dial", {"targets": targets, "timeout": 2})).data
        again = _one(session, Op("reach_listen", {"listen": spec, "lifetime": 1, "token": "u"}))
        stopped = _one(session, Op("reach_stop", {"token": "t"}))
        twice = _one(session, Op("reach_stop", {"token": "t"}))
    finally:
        session.close()
    assert found["good"]["ok"] and found["good"]["kind"] == "ok"
    assert found["other"]["kind"] == "wrong_peer"
    assert found["closed"]["kind"] == "refused"
    assert "Address already in use" in again.data["errors"]["a"] and again.data["token"] is None
    assert (stopped.status, twice.status) == ("changed", "ok")
    with socket.socket() as probe:  # closed before reach_stop answered: free at once
        probe.bind(("127.0.0.1", port))


def test_the_check_agent_quotes_the_interpreter(tmp_path: Path) -> None:
    spaced = tmp_path / "my python" / "bin"
    spaced.mkdir(parents=True)
    (spaced / "python3").symlink_to(sys.executable)
    plan = local_plan(tmp_path)
    work = host_work(plan)["h1"]
    facts = HostFacts("h1", python=str(spaced / "python3"))
    session = local_session(str(spaced / "python3"))
    try:
        _probe(session, work, plan, False, facts)
    finally:
        session.close()
    assert facts.probe is not None and not facts.python_missing, facts.probe_error
    assert facts.sudo is None  # not asked: no become


def test_flag_extractor_runs_with_the_hosts_python() -> None:
    if SGLANG_DIR is None:
        pytest.skip("sglang is not installed")
    options = remote.extract_remote(local_session(), sys.executable, "sglang", str(SGLANG_DIR))
    assert not isinstance(options, str), options
    assert options.version == "0.5.23" and len(options.option_strings) == 559
    missing = remote.extract_remote(local_session(), sys.executable, "sglang", "/nonexistent")
    assert isinstance(missing, str) and "cannot read sglang's flags from /nonexistent" in missing
