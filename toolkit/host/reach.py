"""Reachability modules for `toolkit check`: listen on a run's planned ports, dial them from
the other hosts, stop listening.

Before anything of the run exists, the check proves every TCP path the launch depends on
(bootstrap, dist-init, the MemFabric store): `reach_listen` binds the planned ports on the
target host and answers each connection with a per-port nonce, `reach_dial` connects from
a source host and says whether the check's own listener answered (the right nonce), and
`reach_stop` closes the listeners. The listeners are threads of the agent, so they live no
longer than its session, and at most `lifetime` seconds.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import select
import socket
import threading
import time

from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

# token -> (the event that ends that listener's thread, the thread)
_LISTENERS: dict = {}
_LOCK = threading.Lock()


def _bind(item: dict) -> socket.socket:
    family = socket.AF_INET6 if ":" in item["bind"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((item["bind"], item["port"]))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def _answer(conn: socket.socket, nonce: str) -> None:
    # The client closes first, so TIME_WAIT stays on its side, not on the planned port.
    try:
        conn.settimeout(3)
        conn.sendall((nonce + "\n").encode())
        while conn.recv(256):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def _serve(socks: dict, stop: threading.Event, deadline: float) -> None:
    try:
        while not stop.is_set() and time.time() < deadline:
            for sock in select.select(list(socks), [], [], 0.1)[0]:
                try:
                    conn = sock.accept()[0]
                except OSError:
                    continue
                threading.Thread(target=_answer, args=(conn, socks[sock]), daemon=True).start()
    finally:
        for sock in socks:
            sock.close()


@register
class ReachListen(Module):
    """Bind each planned port (`listen`: [{id, bind, port, nonce}]) and answer connections
    with its nonce until `reach_stop` or `lifetime` seconds; a port that cannot be bound is
    reported in `errors` (another process holds it: the ports row says which)."""

    name = "reach_listen"

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.change("listen on %d ports" % len(args["listen"]))

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        bound, errors, socks = [], {}, {}
        for item in args["listen"]:
            try:
                socks[_bind(item)] = item["nonce"]
            except OSError as exc:
                errors[item["id"]] = "cannot listen on %s:%d: %s" % (
                    item["bind"],
                    item["port"],
                    exc.strerror or exc,
                )
                continue
            bound.append(item["id"])
        data = {"bound": bound, "errors": errors, "token": None}
        if socks:
            token = args["token"]
            stop = threading.Event()
            deadline = time.time() + float(args["lifetime"])
            thread = threading.Thread(target=_serve, args=(socks, stop, deadline), daemon=True)
            with _LOCK:
                _LISTENERS[token] = (stop, thread)
            thread.start()
            data["token"] = token
        return Result(self.name, "changed", "listening on %d ports" % len(bound), data=data)


@register
class ReachStop(Module):
    """Close the listeners `reach_listen` opened under `token`."""

    name = "reach_stop"

    def facts(self, args: dict) -> dict:
        with _LOCK:
            return {"listening": args["token"] in _LISTENERS}

    def decide(self, args: dict, facts: dict) -> Decision:
        if not facts["listening"]:
            return Decision.ok("no listener %s" % args["token"])
        return Decision.change("stop listener %s" % args["token"])

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        with _LOCK:
            stop, thread = _LISTENERS.pop(args["token"])
        stop.set()
        # Closed before the answer goes back: `up` checks these ports free right after.
        thread.join(timeout=5)
        if thread.is_alive():
            return Result(self.name, "failed", "listener %s did not stop" % args["token"])
        return decision.result(self.name, "stopped listener %s" % args["token"])


def dial(target: dict, timeout: float) -> dict:
    """Connect to `address:port` within `timeout`; ok when the answer is the nonce."""
    started = time.time()
    try:
        sock = socket.create_connection((target["address"], target["port"]), timeout=timeout)
    except socket.timeout:  # noqa: UP041 (not TimeoutError before Python 3.10)
        why = "no answer within %g s (a firewall dropping packets?)" % timeout
        return {"ok": False, "kind": "timeout", "error": why}
    except ConnectionRefusedError:
        why = "connection refused (nothing listens there, or a firewall rejects it)"
        return {"ok": False, "kind": "refused", "error": why}
    except OSError as exc:
        return {"ok": False, "kind": "error", "error": str(exc.strerror or exc)}
    data = b""
    try:
        sock.settimeout(timeout)
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    ok = data.decode("utf-8", "replace").strip() == target["nonce"]
    wrong = (
        "connected, but something other than the check's listener answered (another "
        "machine holds this address?)"
    )
    return {
        "ok": ok,
        "kind": "ok" if ok else "wrong_peer",
        "ms": round((time.time() - started) * 1000, 1),
        "error": None if ok else wrong,
    }


@register
class ReachDial(Module):
    """Dial every target (`targets`: [{id, address, port, nonce}]) at once, each within
    `timeout` seconds; `data` maps each id to its outcome."""

    name = "reach_dial"

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.change("dial %d targets" % len(args["targets"]))

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        timeout = float(args["timeout"])
        results: dict = {}

        def one(target: dict) -> None:
            results[target["id"]] = dial(target, timeout)

        threads = [threading.Thread(target=one, args=(t,)) for t in args["targets"]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reached = sum(1 for r in results.values() if r["ok"])
        # ok, not changed: dialing changes nothing on the host.
        return Result(self.name, "ok", "%d of %d reached" % (reached, len(results)), data=results)
