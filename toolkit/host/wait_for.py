"""`wait_for`: until a TCP port opens (or closes) or a URL answers with a status, with a
deadline; a user's step that must wait for something it started (a mount, a cache server).

One look decides: already in the wanted state is ok, else the module polls until the state
comes or `timeout_s` passes, and a timeout names what it saw last.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import socket
import time

from toolkit.host import facts as host
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 2.0  # one look; a filtered port drops packets instead of refusing
STATES = ("started", "stopped")


def look_port(address: str, port: int) -> dict:
    """{"open": bool, "seen": what the connect attempt found}."""
    try:
        sock = socket.create_connection((address, port), CONNECT_TIMEOUT_S)
    except OSError as exc:
        return {"open": False, "seen": exc.strerror or type(exc).__name__}
    sock.close()
    return {"open": True, "seen": "open"}


def look_url(url: str) -> dict:
    """{"status": the HTTP status, 0 when something answered without HTTP, None when no
    connection opened}."""
    return {"status": host.http_status(url, CONNECT_TIMEOUT_S)}


def _seen(facts: dict) -> str:
    if "status" in facts:
        status = facts["status"]
        return {None: "no connection", 0: "no HTTP answer"}.get(status, "HTTP %s" % status)
    return facts.get("seen", "unknown")


@register
class WaitFor(Module):
    """`port` (+ `host`, default 127.0.0.1) or `url` (+ `status`, default 200); `state`
    started (open / answering) or stopped (closed / no connection)."""

    name = "wait_for"

    def label(self, args: dict) -> str:
        return "wait_for %s" % self.target(args)

    def target(self, args: dict) -> str:
        if args.get("url"):
            return str(args["url"])
        return "%s:%s" % (args.get("host") or "127.0.0.1", args.get("port"))

    def problem(self, args: dict) -> str | None:
        if ("port" in args) == ("url" in args):
            return "wait_for: give one of `port` (with `host`) or `url`"
        if "port" in args:
            port = args["port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                return "wait_for: `port` must be a number from 1 to 65535 (got %r)" % (port,)
        elif not isinstance(args["url"], str) or not args["url"].startswith("http://"):
            return "wait_for: `url` must be an http:// URL (got %r)" % (args["url"],)
        if args.get("state", "started") not in STATES:
            return "wait_for: `state` must be started or stopped (got %r)" % (args["state"],)
        for key in ("timeout_s", "interval_s"):
            try:
                if key in args and float(args[key]) <= 0:
                    return "wait_for: `%s` must be more than 0" % key
            except (TypeError, ValueError):
                return "wait_for: `%s` must be a number of seconds" % key
        return None

    def facts(self, args: dict) -> dict:
        if self.problem(args):
            return {}
        if "url" in args:
            return look_url(args["url"])
        return look_port(args.get("host") or "127.0.0.1", int(args["port"]))

    def reached(self, args: dict, facts: dict) -> bool:
        started = args.get("state", "started") == "started"
        if "url" in args:
            if started:
                return facts.get("status") == int(args.get("status", 200))
            return facts.get("status") is None
        return bool(facts.get("open")) == started

    def wanted(self, args: dict) -> str:
        if args.get("state", "started") == "stopped":
            return "%s to close" % self.target(args)
        if "url" in args:
            return "%s to answer %s" % (self.target(args), args.get("status", 200))
        return "%s to open" % self.target(args)

    def decide(self, args: dict, facts: dict) -> Decision:
        problem = self.problem(args)
        if problem:
            return Decision.fail(problem)
        if self.reached(args, facts):
            return Decision.ok("%s: %s" % (self.target(args), _seen(facts)))
        return Decision.change("wait for %s" % self.wanted(args), data={"seen": _seen(facts)})

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        task = self.label(args)
        started = time.monotonic()
        deadline = started + float(args.get("timeout_s", DEFAULT_TIMEOUT_S))
        interval = float(args.get("interval_s", DEFAULT_INTERVAL_S))
        while True:
            facts = self.facts(args)
            elapsed = time.monotonic() - started
            if self.reached(args, facts):
                # ok, not changed: waiting changes nothing on the host (Ansible says the same).
                return Result(
                    task,
                    "ok",
                    "%s: %s after %.1f s" % (self.target(args), _seen(facts), elapsed),
                    data={"elapsed_s": round(elapsed, 3)},
                )
            now = time.monotonic()
            if now >= deadline:
                return Result(
                    task,
                    "failed",
                    "timed out after %.0f s waiting for %s; last saw: %s"
                    % (elapsed, self.wanted(args), _seen(facts)),
                    data={"seen": _seen(facts)},
                )
            time.sleep(min(interval, deadline - now))  # the last look is at the deadline
