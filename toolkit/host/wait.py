"""Modules that wait on or talk to HTTP: readiness of the nodes and the router, and one
request through the endpoint (the smoke test)."""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import json
import os
import time
from urllib.parse import urlsplit

from toolkit.host import facts as host
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

FINAL = ("ready", "failed", "stopped")


def node_state(target: dict) -> str:
    """starting (nothing listening yet), loading (answers, not 200 yet), ready, or failed
    (its process is gone)."""
    pid = host.read_pid(target["pidfile"])
    if pid is None or not host.alive(pid):
        return "failed"
    if target.get("url") is None:
        return "ready"  # no HTTP to ask (a vLLM headless engine): alive is all there is
    status = host.http_status(target["url"], timeout=2.0)
    if status is None:
        return "starting"
    return "ready" if status == target.get("expect", 200) else "loading"


@register
class WaitHttp(Module):
    """Poll each target until its URL answers, its process dies, or the timeout passes;
    every state change is streamed, so the control side draws a live view."""

    name = "wait_http"

    def facts(self, args: dict) -> dict:
        return {"states": {t["name"]: node_state(t) for t in args["targets"]}}

    def decide(self, args: dict, facts: dict) -> Decision:
        if all(s == "ready" for s in facts["states"].values()):
            return Decision.ok("%d ready" % len(facts["states"]))
        waiting = sorted(n for n, s in facts["states"].items() if s != "ready")
        return Decision.change("wait for %s" % ", ".join(waiting), actions=waiting)

    def run(
        self, args: dict, check: bool, emit: Emit, label: str = "", facts: dict | None = None
    ) -> list[Result]:
        if check:
            names = ", ".join(t["name"] for t in args["targets"])
            return [Result(label or "ready", "skipped", "would wait for " + names)]
        return self.poll(args, emit)

    def poll(self, args: dict, emit: Emit) -> list[Result]:
        targets = args["targets"]
        started = time.time()
        deadline = started + float(args["timeout"])
        states = {t["name"]: "starting" for t in targets}
        interval = float(args.get("interval", 0.25))
        mark = args.get("abort_mark")
        while True:
            for t in targets:
                if states[t["name"]] in FINAL:
                    continue
                new = node_state(t)
                if new == "failed" and mark and os.path.exists(mark):
                    new = "stopped"  # killed because a node elsewhere failed: not a failure here
                if new != states[t["name"]]:
                    states[t["name"]] = new
                    emit({"name": t["name"], "state": new, "t": time.time() - started})
            if all(s in FINAL for s in states.values()):
                break
            if "failed" in states.values() or time.time() > deadline:
                break
            time.sleep(interval)
        return outcome(targets, states, time.time() - started, time.time() > deadline, args)


def outcome(targets: list, states: dict, elapsed: float, timed_out: bool, args: dict) -> list:
    """One result per target from the final states of a wait."""
    out = []
    another_failed = "failed" in states.values()
    lines = int(args.get("tail", 40))
    for t in targets:
        state, task = states[t["name"]], "ready " + t["name"]
        if state == "stopped":
            out.append(Result(task, "skipped", "stopped: another node failed"))
        elif state == "ready":
            out.append(Result(task, "ok", "ready in %.1f s" % elapsed))
        elif state == "failed":
            rc = host.exit_status(t["pidfile"])
            out.append(
                Result(
                    task,
                    "failed",
                    "process exited" + (" with status " + rc if rc else ""),
                    data={"log_tail": host.tail(t["log"], lines)},
                )
            )
        elif another_failed and not timed_out:
            out.append(Result(task, "skipped", "still " + state, data={"state": state}))
        else:
            out.append(
                Result(
                    task,
                    "failed",
                    "not ready after %.0f s (still %s)" % (elapsed, state),
                    data={"log_tail": host.tail(t["log"], lines)},
                )
            )
    return out


@register
class Http(Module):
    """One request (the smoke test), with http.client: it reads chunked answers, and unlike
    urllib it never sends cluster-internal traffic to a proxy from the host's environment."""

    name = "http"

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.change("%s %s" % (args.get("method", "GET"), args["url"]))

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        import http.client  # imported where used: most requests need no HTTP (start-up cost)

        parts = urlsplit(args["url"])
        body = args.get("body")
        data = json.dumps(body).encode() if body is not None else None
        path = parts.path + ("?" + parts.query if parts.query else "")
        conn = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=float(args.get("timeout", 60))
        )
        try:
            conn.request(
                args.get("method", "GET"),
                path,
                body=data,
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            text = resp.read(1 << 20).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            return Result(self.name, "failed", "request to %s failed: %s" % (args["url"], exc))
        finally:
            conn.close()
        if resp.status >= 400:
            return Result(
                self.name,
                "failed",
                "HTTP %d: %s" % (resp.status, text[:300]),
                data={"code": resp.status},
            )
        # ok, not changed: a request that only reads (Ansible's uri module says the same).
        return Result(
            self.name, "ok", "HTTP %d" % resp.status, data={"code": resp.status, "body": text}
        )
