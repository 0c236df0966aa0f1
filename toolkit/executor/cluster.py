"""The hosts of a plan with their open sessions, and per-host fan-out of agent work."""

from __future__ import annotations

import base64
from collections.abc import Callable

from rich.console import Console

from toolkit.executor.session import (
    AgentFailed,
    ConnectionLost,
    Session,
    Unreachable,
    connect,
    parallel,
)
from toolkit.host.protocol import Op, Result

# HostWork moved to the plan (pure); kept importable from here.
from toolkit.plan import HostWork as HostWork
from toolkit.plan import host_work as host_work
from toolkit.render.run import Recap


class Cluster:
    """Open sessions to a set of hosts; run a function on many of them at once."""

    def __init__(self, hosts: dict[str, HostWork], console: Console, accept_new: bool) -> None:
        self.hosts = hosts
        self.console = console
        self.accept_new = accept_new
        self.sessions: dict[str, Session] = {}

    def connect(self, recap: Recap) -> list[str]:
        """Connect to every host in parallel; returns the unreachable ones (recorded)."""
        names = list(self.hosts)
        outcomes = parallel(
            names,
            lambda n: connect(
                n, self.hosts[n].connection, self.hosts[n].python, accept_new=self.accept_new
            ),
        )
        bad = []
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, Session):
                self.sessions[name] = outcome
            else:
                recap.unreachable(name, str(outcome))
                bad.append(name)
        return bad

    def each(
        self,
        names: list[str],
        fn: Callable[[Session, HostWork], list[Result]],
        recap: Recap,
        quiet_ok: bool = False,
        phase: str | None = None,
    ) -> dict[str, list[Result]]:
        """Run fn per host in parallel; agent results go to the recap, errors as failures.

        A host whose connection was lost before is reported once, not asked again; one lost
        now is named with `phase` ("lost the SSH connection to H during readiness")."""
        names = [n for n in names if self.sessions[n].lost is None]
        outcomes = parallel(names, lambda n: fn(self.sessions[n], self.hosts[n]))
        done: dict[str, list[Result]] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, ConnectionLost) and phase:
                self.sessions[name].lost = outcome.during(phase)
                recap.unreachable(name, str(self.sessions[name].lost))
            elif isinstance(outcome, Unreachable):
                recap.unreachable(name, str(outcome))
            elif isinstance(outcome, AgentFailed):
                recap.add_agent(name, [Result("agent", "failed", str(outcome))])
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                recap.add_agent(name, outcome, quiet_ok=quiet_ok)
                done[name] = outcome
        return done

    @property
    def reachable(self) -> list[str]:
        """Connected hosts whose connection has not been lost since."""
        return [n for n, s in self.sessions.items() if s.lost is None]

    @property
    def lost(self) -> list[str]:
        return [n for n, s in self.sessions.items() if s.lost is not None]

    def interrupt(self) -> None:
        """End every request in flight on every host (Ctrl-C); connections stay open."""
        for session in self.sessions.values():
            session.interrupt()

    def close(self) -> None:
        parallel(list(self.sessions.values()), lambda session: session.close())


def file_op(files: list[tuple[str, str, str]], name: str = "") -> Op:
    """The agent's write_files op for (path, text, octal mode) triples."""
    payload = [
        {"path": path, "b64": base64.b64encode(text.encode()).decode(), "mode": mode}
        for path, text, mode in files
    ]
    return Op("write_files", {"files": payload}, name=name)
