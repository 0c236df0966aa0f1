"""One running host agent over a channel (SSH) or a pipe (a local host): a request in, its
progress lines and result out, and what it said on stderr when it produced no result.

Every read is bounded: a remote channel times out after SILENCE_S without a line (the agent
writes a heartbeat every 2 s while it works), which the session reports as a lost host.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import paramiko

from toolkit.host import protocol
from toolkit.host.protocol import Result

AGENT_CLOSE_TIMEOUT_S = 5.0
STDERR_KEEP_BYTES = 64 * 1024
CHANNEL_OPEN_S = 10
SILENCE_S = 20.0
Progress = Callable[[dict[str, Any]], None]


class RequestInterrupted(Exception):
    """The request was ended on purpose (`Session.interrupt`, for Ctrl-C)."""


class AgentFailed(Exception):
    """The agent ran but produced no result (interpreter missing, sudo refused, ...)."""


class AgentProcess:
    """A running agent (`serve`): requests in on stdin, lines out on stdout."""

    def __init__(
        self,
        command: str,
        send: Callable[[bytes], None],
        stdout: IO[bytes],
        read_errors: Callable[[], bytes],
        finish: Callable[[bool], int | None],
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self.command = command
        self.send = send
        self.stdout = stdout
        self.finish = finish
        self.connected = connected
        self.unsent = b""
        self.alive = True
        self.why_closed: Callable[[], str] = lambda: "connection dropped"
        self.errors = bytearray()
        self.error_reader = threading.Thread(
            target=self._keep_errors, args=(read_errors,), daemon=True
        )
        self.error_reader.start()

    @classmethod
    def remote(cls, transport: paramiko.Transport, command: str) -> AgentProcess:
        channel = transport.open_session(timeout=CHANNEL_OPEN_S)
        channel.exec_command(command)
        # A read that waits longer raises TimeoutError: the agent's heartbeat never stops.
        channel.settimeout(SILENCE_S)

        def finish(wait: bool) -> int | None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()  # EOF: the agent's serve loop ends
            if not wait:
                channel.close()
                return None
            deadline = time.monotonic() + AGENT_CLOSE_TIMEOUT_S
            while not channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            rc = channel.recv_exit_status() if channel.exit_status_ready() else None
            channel.close()
            return rc

        read_errors = lambda: channel.recv_stderr(4096)  # noqa: E731
        stdout = channel.makefile("rb")
        process = cls(command, channel.sendall, stdout, read_errors, finish, transport.is_active)
        # Paramiko keeps why its connection ended (a reset, a timeout); a keepalive that could
        # not be sent shows as a bare EOF.
        process.why_closed = lambda: str(transport.get_exception() or "") or "connection dropped"
        return process

    @classmethod
    def local(cls, command: str) -> AgentProcess:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        def send(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        def finish(_wait: bool) -> int | None:
            with contextlib.suppress(OSError):  # a pipe to an agent that already exited
                stdin.close()
            # Always reaped (it exits at once on EOF): an unwaited child stays a zombie.
            try:
                return proc.wait(timeout=AGENT_CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()

        stderr = proc.stderr
        return cls(command, send, proc.stdout, lambda: stderr.read1(4096), finish)

    def _keep_errors(self, read_errors: Callable[[], bytes]) -> None:
        for chunk in iter(read_errors, b""):
            self.errors += chunk
            del self.errors[:-STDERR_KEEP_BYTES]

    def request(self, request: str, on_progress: Progress | None) -> list[Result]:
        """Send one request; progress lines go to `on_progress`, the result is returned."""
        try:
            self.send(self.unsent + request.encode() + b"\n")
            self.unsent = b""
            for raw in iter(self.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith(protocol.RESULT):
                    return protocol.decode_results(line[len(protocol.RESULT) :])
                if line.startswith(protocol.PROGRESS) and on_progress:
                    on_progress(json.loads(line[len(protocol.PROGRESS) :]))
        except TimeoutError:
            self.close()
            raise
        except (OSError, EOFError, paramiko.SSHException):
            if not self.connected():
                self.close()
                raise
            # The connection is fine: the agent's end closed (it, its Python or sudo is gone).
        except BaseException:
            # Left mid-request (a failing progress callback, Ctrl-C): the rest of this answer
            # would be read as the next one's, so never reuse it.
            self.close()
            raise
        # No result: the agent (or the interpreter, or sudo) is gone, or the connection is.
        if not self.alive:  # closed on purpose (Ctrl-C): nothing more to learn
            raise RequestInterrupted(f"`{self.command}` was interrupted")
        self.alive = False
        rc = self.finish(True)
        if rc in (None, -1) and not settled(self.connected):
            raise EOFError(self.why_closed())
        self.error_reader.join(timeout=2)
        detail = self.errors.decode("utf-8", "replace").strip().splitlines()[-3:]
        detail = detail or [f"exit status {rc}"]
        raise AgentFailed(f"`{self.command}` produced no result: {' / '.join(detail)}")

    def close(self) -> None:
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError, paramiko.SSHException, EOFError, ValueError):
                self.finish(False)


def settled(connected: Callable[[], bool], wait_s: float = 1.0) -> bool:
    """Whether the connection is still up once a close has had time to show: a channel ends
    a moment before its transport reports the connection gone."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not connected():
            return False
        time.sleep(0.05)
    return connected()
