"""One connection per host, opened in parallel and reused for every phase.

Fabric (over Paramiko) reaches SSH hosts, honouring ~/.ssh/config (including ProxyJump) and
the inventory's ansible_* variables; `ansible_connection: local` hosts run through a local
shell. Host keys are verified against ~/.ssh/known_hosts; `accept_new` behaves like
OpenSSH's `StrictHostKeyChecking=accept-new` (unknown keys are recorded, changed keys are
still refused).

Work goes to one agent process per host (`toolkit/host/agent.py`), started on the first
request and fed one JSON request per phase over the same channel. Every SSH command costs
the host a login shell, and shells often run heavy rc files (`conda init`, `pyenv init`:
about 0.2 CPU-seconds each on the test hosts), so a command pays for one shell and one Python per
host, not one per phase. A request made while the agent is busy (stopping a run while
another phase waits on it) gets a second agent, closed after that request.

Every wait is bounded. Each connection sends an SSH keepalive every KEEPALIVE_S and the
kernel drops it when what it sent stays unacknowledged for TCP_USER_TIMEOUT_MS, so a host
whose link or sshd goes away ends every read on it within about 15 s; and the agent writes
a heartbeat every 2 s while it works, so one silent for SILENCE_S (a hung host, a proxied
connection the kernel cannot watch) is given up on too. Both surface as `ConnectionLost`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from fabric import Connection as FabricConnection

from toolkit import shell
from toolkit.executor.agent_process import (
    CHANNEL_OPEN_S,
    SILENCE_S,
    AgentFailed,
    AgentProcess,
    RequestInterrupted,
    settled,
)
from toolkit.host import bundle, protocol
from toolkit.host.probe import PYTHON_MISSING_ENV
from toolkit.host.protocol import Op, Result
from toolkit.plan import Connection

KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
CONNECT_TIMEOUT_S = 10
KEEPALIVE_S = 3
TCP_USER_TIMEOUT_MS = 12_000
__all__ = ["AgentFailed", "ConnectionLost", "RequestInterrupted", "Session", "Unreachable"]
T = TypeVar("T")
Progress = Callable[[dict[str, Any]], None]


class Unreachable(Exception):
    """The host could not be connected to (network, authentication or host key)."""


class ConnectionLost(Unreachable):
    """An open connection dropped or stopped answering."""

    def __init__(self, host: str, detail: str, phase: str | None = None) -> None:
        self.host, self.detail, self.phase = host, detail, phase
        where = f" during {phase}" if phase else ""
        super().__init__(f"lost the SSH connection to {host}{where} ({detail})")

    def during(self, phase: str) -> ConnectionLost:
        return self if self.phase else ConnectionLost(self.host, self.detail, phase)


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
    # Why the connection was given up on; later requests fail at once instead of waiting.
    lost: ConnectionLost | None = None
    _agent: AgentProcess | None = field(default=None, repr=False)
    _agent_busy: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # `toolkit check`'s agent (see `agent(login=True)`).
    _login_agent: AgentProcess | None = field(default=None, repr=False)
    _login_busy: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _running: set[AgentProcess] = field(default_factory=set, repr=False)

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
        return f"sudo -n {'-u ' + shell.quote(user) + ' ' if user else ''}"

    def run_script(
        self, script: str, stdin: str | None = None, on_line: Callable[[str], None] | None = None
    ) -> tuple[int, str, str]:
        """A bash script on the host, as the become user (root) where the inventory says so,
        as `up` starts the engine."""
        return self.run(f"{self._prefix()}bash -c {shell.quote(script)}", stdin, on_line)

    def run(
        self, command: str, stdin: str | None = None, on_line: Callable[[str], None] | None = None
    ) -> tuple[int, str, str]:
        """Run a shell command; stream stdout lines to `on_line`. Returns rc, out, err."""
        if self.fabric is None:
            return _run_local(command, stdin, on_line)
        if self.lost is not None:
            raise self.lost
        try:
            rc, out, err = _run_channel(self.fabric, command, stdin, on_line)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._lose(str(exc) or type(exc).__name__) from exc
        if rc == -1 and not _settled_connected(self.fabric):
            raise self._lose("the connection closed")
        return rc, out, err

    def _lose(self, detail: str) -> ConnectionLost:
        self.lost = self.lost or ConnectionLost(self.name, detail)
        return self.lost

    def interrupt(self) -> None:
        """End every request in flight (Ctrl-C): their readers return at once."""
        for process in list(self._running):
            process.close()

    def agent(
        self,
        ops: list[Op],
        check: bool = False,
        on_progress: Progress | None = None,
        login: bool = False,
    ) -> list[Result]:
        """Run agent tasks as one request; return their results.

        `login`: for `toolkit check`, which must report a refused sudo or a missing
        interpreter instead of failing on them: its own agent, as the login user, on
        python3 when the planned interpreter is missing (`probe.PYTHON_MISSING_ENV` tells
        the probe), carrying the check's modules, which the other phases' agent goes
        without.
        """
        if self.lost is not None:
            raise self.lost
        request = protocol.encode_request(ops, check)
        busy = self._login_busy if login else self._agent_busy
        try:
            if not busy.acquire(blocking=False):
                # Another phase holds the agent (stopping a run while a wait runs on it):
                # this request gets an agent of its own, closed after it.
                one_off = self._start_agent(login)
                try:
                    return self._request(one_off, request, on_progress)
                finally:
                    one_off.close()
            try:
                current = self._login_agent if login else self._agent
                if current is None or not current.alive:
                    current = self._start_agent(login)
                    if login:
                        self._login_agent = current
                    else:
                        self._agent = current
                return self._request(current, request, on_progress)
            finally:
                busy.release()
        except TimeoutError as exc:
            raise self._lose(f"no answer for {SILENCE_S:.0f} s") from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._lose(str(exc) or type(exc).__name__) from exc

    def _request(
        self, process: AgentProcess, request: str, on_progress: Progress | None
    ) -> list[Result]:
        self._running.add(process)
        try:
            return process.request(request, on_progress)
        finally:
            self._running.discard(process)

    def _start_agent(self, login: bool = False) -> AgentProcess:
        boot = shell.quote(bundle.BOOTSTRAP)
        if login:
            # As the probe ran before the agent carried it: no sudo, python3 as a fallback.
            py = shell.quote(self.python)
            command = (
                f"if command -v {py} >/dev/null 2>&1; then exec {py} -u -c {boot}; "
                f"else export {PYTHON_MISSING_ENV}=1; exec python3 -u -c {boot}; fi"
            )
        else:
            command = f"{self._prefix()}{shell.quote(self.python)} -u -c {boot}"
        if self.fabric is None:
            process = AgentProcess.local(command)
        else:
            process = AgentProcess.remote(_transport(self.fabric), command)
        # With the first request; the check's agent also carries its modules (probe, reach).
        process.unsent = bundle.payload(check=login)
        return process

    def close(self) -> None:
        for agent in (self._agent, self._login_agent):
            if agent is not None:
                agent.close()
        self._agent = self._login_agent = None
        if self.fabric is not None:
            self.fabric.close()


def _settled_connected(fab: FabricConnection) -> bool:
    transport = fab.client.get_transport()
    return transport is not None and settled(transport.is_active)


def _keep_alive(fab: FabricConnection) -> None:
    """Keepalives on the host's connection and every ProxyJump hop; where the connection is
    a TCP socket of ours, the kernel also drops it once they go unanswered."""
    hop: Any = fab
    while isinstance(hop, FabricConnection):
        transport = hop.client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
            sock = transport.sock
            if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
        hop = hop.gateway


def _transport(fab: FabricConnection) -> paramiko.Transport:
    transport = fab.client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("the connection is closed")
    return transport


def _run_channel(
    fab: FabricConnection, command: str, stdin: str | None, on_line: Callable[[str], None] | None
) -> tuple[int, str, str]:
    """One command on a new channel of the host's open transport.

    Paramiko directly rather than Fabric's `run`: Invoke pumps a non-file stdin one byte per
    10 ms, which would take minutes for the agent program.
    """
    channel = _transport(fab).open_session(timeout=CHANNEL_OPEN_S)
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
    _keep_alive(fab)
    session.fabric = fab
    return session


def parallel(items: Iterable[T], fn: Callable[[T], Any], workers: int = 16) -> list[Any]:
    """Call fn on every item at once; each outcome is its return value or its exception.

    Ctrl-C (or SIGTERM, see `cancel`) reaches the caller at once: the workers still blocked
    on a host are left to the caller's cleanup (`Session.interrupt`), not waited for.
    """
    items = list(items)
    if not items:
        return []

    def guarded(item: T) -> Any:
        try:
            return fn(item)
        except Exception as exc:  # kept per host: one bad host never hides the others
            return exc

    if len(items) == 1:
        # One host (the bench host): in this thread, so Ctrl-C interrupts the call itself.
        return [guarded(items[0])]

    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)))
    try:
        futures = [pool.submit(guarded, item) for item in items]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
