"""The check's host modules (`host_facts`, `reach_*`) from fixtures: facts in, decision out,
and check mode says "would"; `dial` against real loopback sockets. No SSH, no agent.

Why: every host-side module is tested without a host the way pyinfra tests operations;
the agent runs of the same modules are in test_check_local.py and
test_preflight_remote_probe.py.
"""

from __future__ import annotations

import socket

from toolkit.host import probe, reach  # noqa: F401 (registers host_facts)
from toolkit.host.module import MODULES


def _emit(_event: dict) -> None:
    pass


def test_reach_stop_is_ok_when_nothing_listens_and_says_would_in_check_mode() -> None:
    stop = MODULES["reach_stop"]
    assert stop.decide({"token": "t"}, {"listening": False}).status == "ok"
    decision = stop.decide({"token": "t"}, {"listening": True})
    assert (decision.status, decision.msg) == ("changed", "stop listener t")
    reach._LISTENERS["t"] = None  # a listener the agent holds: check mode leaves it
    try:
        [result] = stop.run({"token": "t"}, True, _emit)
        assert (result.status, result.msg) == ("changed", "would stop listener t")
        assert "t" in reach._LISTENERS
    finally:
        reach._LISTENERS.pop("t", None)


def test_listen_and_dial_in_check_mode_bind_and_dial_nothing() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    item = {"id": "a", "bind": "127.0.0.1", "port": port, "nonce": "n"}
    [listen] = MODULES["reach_listen"].run({"listen": [item], "lifetime": 5}, True, _emit)
    assert listen.msg == "would listen on 1 ports" and not listen.data
    with socket.socket() as free:  # nothing was bound
        free.bind(("127.0.0.1", port))
    target = {"id": "a", "address": "127.0.0.1", "port": port, "nonce": "n"}
    [dial] = MODULES["reach_dial"].run({"targets": [target], "timeout": 1}, True, _emit)
    assert dial.msg == "would dial 1 targets"


def test_dial_tells_refused_from_a_wrong_peer() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    assert reach.dial({"address": "127.0.0.1", "port": refused, "nonce": "n"}, 1)["kind"] == (
        "refused"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # Accepted by the kernel, never answered: not the check's listener.
        found = reach.dial({"address": "127.0.0.1", "port": port, "nonce": "n"}, 0.5)
    assert found["kind"] == "wrong_peer" and not found["ok"]


def test_host_facts_is_ok_and_names_unreadable_sections() -> None:
    module = MODULES["host_facts"]
    facts = {"facts": {"probe_version": 1, "listening": {"error": "OSError: nope"}}, "uid": 0}
    decision = module.decide({}, facts)
    assert decision.status == "ok" and decision.msg == "2 sections (unreadable: listening)"
    assert decision.data["uid"] == 0
