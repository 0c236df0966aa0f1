"""The host agent through a local session (`ansible_connection: local`, the README's local
rehearsal): one agent process serves a command's requests; a request made while it is busy
gets an agent of its own; a missing interpreter is a clear failure. Real processes, no SSH."""

from __future__ import annotations

import base64
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from toolkit.executor.session import AgentFailed, Session
from toolkit.host.protocol import Op
from toolkit.plan import Connection

pytestmark = pytest.mark.integration
LOCAL = Connection(address="127.0.0.1", local=True)


def _agent_pid(session: Session) -> int:
    """The PID of the agent that answered (it reads its own /proc/self/stat)."""
    result = session.agent([Op("read_file", {"path": "/proc/self/stat"})])[0]
    assert result.status == "ok", result
    return int(base64.b64decode(result.data["b64"]).split()[0])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_agent_serves_every_request_of_a_session() -> None:
    session = Session(name="local", connection=LOCAL, python=sys.executable)
    try:
        first, second = _agent_pid(session), _agent_pid(session)
        assert first == second != os.getpid()
    finally:
        session.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{first}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{first}").exists(), "the agent outlived its session"


def test_a_request_while_the_agent_is_busy_gets_its_own(tmp_path: Path) -> None:
    session = Session(name="local", connection=LOCAL, python=sys.executable)
    pidfile = tmp_path / "node.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # alive, so the wait runs to its timeout
    target = {
        "name": "node",
        "url": f"http://127.0.0.1:{_closed_port()}/health",
        "pidfile": str(pidfile),
        "log": str(tmp_path / "node.log"),
    }
    try:
        persistent = _agent_pid(session)
        waited: list[list[dict]] = []
        wait_op = Op("wait_http", {"targets": [target], "timeout": 3})
        waiter = threading.Thread(target=lambda: waited.append(session.agent([wait_op])))
        waiter.start()
        time.sleep(0.5)
        started = time.monotonic()
        other = _agent_pid(session)
        assert time.monotonic() - started < 2.5, "the second request waited for the first"
        assert waiter.is_alive()
        assert other != persistent
        waiter.join(timeout=30)
        assert waited[0][0].status == "failed" and "still starting" in waited[0][0].msg
        assert _agent_pid(session) == persistent  # the long-lived agent serves again
    finally:
        session.close()


def test_a_missing_interpreter_is_a_clear_failure() -> None:
    session = Session(name="local", connection=LOCAL, python="/nonexistent/python3")
    try:
        with pytest.raises(AgentFailed, match=r"/nonexistent/python3.*produced no result"):
            session.agent([Op("read_file", {"path": "/proc/self/stat"})])
    finally:
        session.close()
