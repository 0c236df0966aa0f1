"""One connection per host, opened in parallel and reused for every phase.

Fabric (over Paramiko) reaches SSH hosts, honouring ~/.ssh/config (including ProxyJump) and
the inventory's ansible_* variables; `ansible_connection: local` hosts run through a local
shell. Host keys are verified against ~/.ssh/known_hosts; `accept_new` behaves like
OpenSSH's `StrictHostKeyChecking=accept-new` (unknown keys are recorded, changed keys are
still refused). Work is sent as the agent program on stdin, one command per phase.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from fabric import Connection as FabricConnection

from toolkit.plan import Connection
from toolkit.remote import agent

AGENT_SOURCE = Path(agent.__file__).read_text()
KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
CONNECT_TIMEOUT_S = 10
T = TypeVar("T")
Progress = Callable[[dict[str, Any]], None]


class Unreachable(Exception):
    """The host could not be connected to (network, authentication or host key)."""


class AgentFailed(Exception):
    """The agent ran but produced no result (interpreter missing, sudo refused, ...)."""


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record an unknown host key in ~/.ssh/known_hosts; a changed key still fails."""

    lock = threading.Lock()

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        with self.lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            KNOWN_HOSTS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with KNOWN_HOSTS.open("a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


@dataclass
class Session:
    """A live connection to one host."""

    name: str
    connection: Connection
    python: str
    fabric: FabricConnection | None = None

    @property
    def sudo(self) -> bool:
        if not self.connection.become:
            return False
        if self.connection.local:
            return os.geteuid() != 0 or bool(self.connection.become_user)
        return self.connection.user not in (None, "root") or bool(self.connection.become_user)

    def _prefix(self) -> str:
        if not self.sudo:
            return ""
        user = self.connection.become_user
        return f"sudo -n {'-u ' + shlex.quote(user) + ' ' if user else ''}"

    def run(
        self, command: str, stdin: str | None = None, on_line: Callable[[str], None] | None = None
    ) -> tuple[int, str, str]:
        """Run a shell command; stream stdout lines to `on_line`. Returns rc, out, err."""
        if self.fabric is None:
            return _run_local(command, stdin, on_line)
        try:
            return _run_channel(self.fabric, command, stdin, on_line)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise Unreachable(f"lost the connection: {exc}") from exc

    def agent(
        self, ops: list[dict[str, Any]], check: bool = False, on_progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Run agent tasks in one remote command; return their results."""
        request = json.dumps({"ops": ops, "check": check})
        program = AGENT_SOURCE + f"\nmain(json.loads({request!r}))\n"
        results: list[list[dict[str, Any]]] = []

        def on_line(line: str) -> None:
            if line.startswith(agent.PROGRESS) and on_progress:
                on_progress(json.loads(line[len(agent.PROGRESS) :]))
            elif line.startswith(agent.RESULT):
                results.append(json.loads(line[len(agent.RESULT) :]))

        command = f"{self._prefix()}{shlex.quote(self.python)} -"
        rc, _, err = self.run(command, stdin=program, on_line=on_line)
        if not results:
            detail = err.strip().splitlines()[-3:] or [f"exit status {rc}"]
            raise AgentFailed(f"`{command}` produced no result: {' / '.join(detail)}")
        return results[-1]

    def close(self) -> None:
        if self.fabric is not None:
            self.fabric.close()


def _run_channel(
    fab: FabricConnection, command: str, stdin: str | None, on_line: Callable[[str], None] | None
) -> tuple[int, str, str]:
    """One command on a new channel of the host's open transport.

    Paramiko directly rather than Fabric's `run`: Invoke pumps a non-file stdin one byte per
    10 ms, which would take minutes for the agent program.
    """
    transport = fab.client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("the connection is closed")
    channel = transport.open_session(timeout=30)
    try:
        channel.exec_command(command)
        errors: list[bytes] = []
        reader = threading.Thread(
            target=lambda: errors.append(channel.makefile_stderr("rb").read()), daemon=True
        )
        reader.start()
        if stdin is not None:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        out_lines = []
        for raw in channel.makefile("rb"):
            line = raw.decode("utf-8", "replace")
            out_lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
        rc = channel.recv_exit_status()
        reader.join(timeout=10)
        return rc, "".join(out_lines), b"".join(errors).decode("utf-8", "replace")
    finally:
        channel.close()


def _run_local(
    command: str, stdin: str | None, on_line: Callable[[str], None] | None
) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        ["bash", "-c", command],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    out_lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out_lines.append(line)
        if on_line:
            on_line(line.rstrip("\n"))
    err = proc.stderr.read() if proc.stderr else ""
    return proc.wait(), "".join(out_lines), err


def _fabric(conn: Connection, accept_new: bool) -> FabricConnection:
    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
    connect_kwargs: dict[str, Any] = {"banner_timeout": 15, "auth_timeout": 15}
    if conn.user:
        kwargs["user"] = conn.user
    if conn.port != 22:
        kwargs["port"] = conn.port
    if conn.key_file:
        connect_kwargs["key_filename"] = os.path.expanduser(conn.key_file)
    fab = FabricConnection(conn.address, connect_kwargs=connect_kwargs, **kwargs)
    hop: FabricConnection | None = fab
    while isinstance(hop, FabricConnection):  # the host and each ProxyJump hop
        _verify_host_keys(hop, accept_new)
        hop = hop.gateway if isinstance(hop.gateway, FabricConnection) else None
    return fab


def _verify_host_keys(fab: FabricConnection, accept_new: bool) -> None:
    client = fab.client
    client.load_system_host_keys()
    extra = fab.ssh_config.get("userknownhostsfile")
    for path in (extra or "").split():
        expanded = Path(os.path.expanduser(path))
        if expanded.is_file() and expanded != KNOWN_HOSTS:
            client.load_host_keys(str(expanded))
    client.set_missing_host_key_policy(_AcceptNew() if accept_new else paramiko.RejectPolicy())


def connect(name: str, conn: Connection, python: str, accept_new: bool) -> Session:
    """Open one host's connection, with errors a user can act on."""
    session = Session(name=name, connection=conn, python=python)
    if conn.local:
        return session
    fab = _fabric(conn, accept_new)
    where = f"{conn.user + '@' if conn.user else ''}{conn.address}:{conn.port}"
    try:
        fab.open()
    except paramiko.BadHostKeyException as exc:
        raise Unreachable(
            f"{where}: the host key CHANGED since it was recorded in known_hosts "
            f"({exc.key.get_name()}); if that is expected, remove the old entry with "
            f"`ssh-keygen -R {conn.address}`"
        ) from None
    except paramiko.SSHException as exc:
        text = str(exc)
        if "not found in known_hosts" in text:
            raise Unreachable(
                f"{where}: host key unknown (not in ~/.ssh/known_hosts); connect once with "
                "ssh, or pass --accept-new-host-keys"
            ) from None
        raise Unreachable(f"{where}: SSH failed: {text}") from None
    except TimeoutError:
        raise Unreachable(f"{where}: timed out after {CONNECT_TIMEOUT_S} s") from None
    except OSError as exc:
        raise Unreachable(f"{where}: {exc.strerror or exc}") from None
    session.fabric = fab
    return session


def parallel(items: Iterable[T], fn: Callable[[T], Any], workers: int = 16) -> list[Any]:
    """Call fn on every item at once; each outcome is its return value or its exception."""
    items = list(items)
    if not items:
        return []

    def guarded(item: T) -> Any:
        try:
            return fn(item)
        except Exception as exc:  # kept per host: one bad host never hides the others
            return exc

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(guarded, items))
