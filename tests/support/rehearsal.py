"""Run rehearsal engines (and the real router) as subprocesses on loopback, for tests.

Every process writes its log to a file (a pipe nobody reads would block it) and is stopped
by `Processes.stop_all()`, which tests call from a `finally` or a fixture. HTTP goes through
`http.client` directly, so no proxy setting can send test traffic off the machine.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import toolkit.rehearsal.engine as engine_module

ENGINE = Path(engine_module.__file__)
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def loopback_env(**extra: str) -> dict[str, str]:
    """The current environment without proxies, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"{self.name} still running after {timeout} s:\n{self.log()}"
            raise AssertionError(message) from None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 5 s; returns the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Processes:
    """Owns the processes a test starts; `stop_all()` ends every one of them."""

    directory: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.directory / f"{name}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or loopback_env(),
                cwd=self.directory,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def engine(
        self,
        name: str,
        server_args: list[str],
        timing: list[str] | tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> Proc:
        return self.start(name, [python, str(ENGINE), *timing, "--", *server_args])

    def stop_all(self) -> None:
        """SIGTERM to every process first, so their shutdowns overlap; then reap each."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop()


def request(method: str, url: str, body: object = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request to a loopback URL; returns status and body."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, "/" + path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(url: str) -> object:
    status, body = request("GET", url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def post_json(url: str, body: object, timeout: float = 30.0) -> tuple[int, object]:
    status, raw = request("POST", url, body, timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def sse_events(url: str, body: object, timeout: float = 30.0) -> list[str]:
    """POSTs `body` and returns the `data:` payloads of the event stream, in order."""
    status, raw = request("POST", url, body, timeout)
    assert status == 200, (status, raw)
    text = raw.decode()
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def wait_status(url: str, want: int = 200, timeout: float = 15.0) -> float:
    """Polls GET `url` until it answers `want`; returns the seconds it took."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout:
        try:
            last, _ = request("GET", url, timeout=2)
            if last == want:
                return time.monotonic() - start
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"GET {url} did not answer {want} within {timeout} s (last: {last})")
