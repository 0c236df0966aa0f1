"""Multi-node start-up and the ports a node owns: the simulated torch.distributed rendezvous
on `--dist-init-addr`, the simulated weight load, and binding every port before serving.

Part of the rehearsal engine (`engine.py` is the entry point); standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time

if __package__:  # imported as toolkit.rehearsal.engine_cluster
    from .engine_core import Engine
    from .engine_http import (
        HEALTH_ROUTES,
        SGLANG_ROUTES,
        VLLM_ROUTES,
        BootstrapHandler,
        EngineHTTPServer,
        Handler,
    )
    from .engine_settings import host_port, log, split_host_port
else:  # uploaded next to engine.py, whose directory is on sys.path
    from engine_core import Engine  # type: ignore[no-redef]
    from engine_http import (  # type: ignore[no-redef]
        HEALTH_ROUTES,
        SGLANG_ROUTES,
        VLLM_ROUTES,
        BootstrapHandler,
        EngineHTTPServer,
        Handler,
    )
    from engine_settings import host_port, log, split_host_port  # type: ignore[no-redef]

RENDEZVOUS_HELLO = "TOOLKIT-REHEARSAL-RENDEZVOUS"


class Rendezvous:
    """Rank 0's side of the simulated torch.distributed rendezvous on the dist-init port."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.joined: dict[int, socket.socket] = {}
        self.changed = threading.Condition()

    def join(self, rank: int, nnodes: int, sock: socket.socket, peer: str) -> str | None:
        expected = self.engine.settings.nnodes
        if nnodes != expected:
            return f"node says --nnodes {nnodes} but rank 0 has --nnodes {expected}"
        if not 1 <= rank < expected:
            return f"--node-rank {rank} is out of range for --nnodes {expected}"
        with self.changed:
            if rank in self.joined:
                return f"node rank {rank} already joined (two nodes with the same --node-rank?)"
            self.joined[rank] = sock
            self.changed.notify_all()
        log(f"Node rank {rank} joined the rendezvous from {peer}")
        return None

    def leave(self, rank: int, graceful: bool, peer: str) -> None:
        with self.changed:
            self.joined.pop(rank, None)
        if self.engine.stop.is_set():
            return  # we are shutting down ourselves
        if graceful:
            log(f"Node rank {rank} ({peer}) left the rendezvous", "WARNING")
        else:
            self.engine.fail(f"Node rank {rank} ({peer}) dropped out of the rendezvous")

    def wait_all(self, deadline: float) -> list[int]:
        """Blocks until every rank >= 1 joined; returns the ranks still missing at the deadline."""
        wanted = set(range(1, self.engine.settings.nnodes))
        with self.changed:
            while not wanted <= set(self.joined) and not self.engine.stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(min(remaining, 0.5))
            return sorted(wanted - set(self.joined))

    def close(self) -> None:
        with self.changed:
            for sock in self.joined.values():
                with contextlib.suppress(OSError):
                    sock.sendall(b"BYE\n")


class RendezvousHandler(socketserver.StreamRequestHandler):
    """`HELLO rank=R nnodes=N` -> `OK` or `ERROR why`; then holds the connection open."""

    def handle(self) -> None:
        rendezvous: Rendezvous = self.server.rendezvous  # type: ignore[attr-defined]
        peer = host_port(*self.client_address[:2])
        self.request.settimeout(10)
        try:
            words = self.rfile.readline(300).decode("utf-8", "replace").split()
            fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
            if words[:1] != [RENDEZVOUS_HELLO]:
                return  # a port check or a stranger: close, like a TCPStore would
            rank, nnodes = int(fields.get("rank", -1)), int(fields.get("nnodes", -1))
        except (OSError, ValueError):
            return
        problem = rendezvous.join(rank, nnodes, self.request, peer)
        if problem:
            log(f"Rejected rendezvous from {peer}: {problem}", "ERROR")
            self.wfile.write((f"ERROR {problem}\n").encode())
            return
        self.wfile.write(b"OK\n")
        self.request.settimeout(None)
        try:
            graceful = self.rfile.readline().startswith(b"BYE")
        except OSError:
            graceful = False
        rendezvous.leave(rank, graceful, peer)


class _RendezvousServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def join_rank0(engine: Engine, deadline: float) -> socket.socket | None:
    """Rank >= 1: connect to rank 0's dist-init address, retrying until the deadline."""
    s = engine.settings
    host, port = split_host_port(s.dist_init_addr or "")
    where = host_port(host, port)
    hello = f"{RENDEZVOUS_HELLO} rank={s.node_rank} nnodes={s.nnodes}\n".encode()
    last_error = "no attempt"
    while not engine.stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=2)
            sock.settimeout(10)
            sock.sendall(hello)
            reply = _read_line(sock)
            if reply == "OK":
                sock.settimeout(None)
                return sock
            sock.close()
            if reply.startswith("ERROR"):
                engine.fail(f"Rank 0 at --dist-init-addr {where} refused this node: {reply[6:]}")
                return None
            last_error = f"the port answered but it is not rank 0's rendezvous ({reply[:60]!r})"
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        if time.monotonic() > deadline:
            waited = deadline - engine.started
            engine.fail(
                f"Could not reach rank 0 at --dist-init-addr {where} within {waited:.0f} s:"
                f" {last_error}"
            )
            return None
        engine.stop.wait(0.5)
    return None


def _read_line(sock: socket.socket) -> str:
    """One short line, read byte by byte so nothing after it is consumed."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 300:
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data.decode("utf-8", "replace").strip()


def watch_rank0(engine: Engine, sock: socket.socket) -> None:
    """Rank >= 1 lives as long as rank 0: BYE is a clean shutdown, EOF is a crash."""
    try:
        line = _read_line(sock)
    except OSError:
        line = ""
    if line == "BYE":
        log("Rank 0 shut down; exiting")
        engine.stop.set()
    else:
        where = engine.settings.dist_init_addr
        engine.fail(f"Lost the connection to rank 0 at {where} (it exited or crashed)")


# ---------------------------------------------------------------------------- start-up


def startup(engine: Engine, rendezvous: Rendezvous | None) -> None:
    """Rendezvous (multi-node), simulated weight load, then ready."""
    s, t = engine.settings, engine.timing
    deadline = engine.started + t.load_seconds + t.rendezvous_timeout
    if s.nnodes > 1 and rendezvous is not None:
        missing = rendezvous.wait_all(deadline)
        if missing:
            waited = deadline - engine.started
            return engine.fail(
                f"Timed out after {waited:.0f} s waiting for node ranks {missing} to join the"
                f" rendezvous at --dist-init-addr {s.dist_init_addr} (check their"
                " --dist-init-addr, --nnodes and --node-rank)"
            )
    elif s.nnodes > 1:
        sock = join_rank0(engine, deadline)
        if sock is None:
            return None
        log(f"Joined the rendezvous at {s.dist_init_addr} as node rank {s.node_rank} of {s.nnodes}")
        threading.Thread(target=watch_rank0, args=(engine, sock), daemon=True).start()
        engine.rank0_socket = sock  # type: ignore[attr-defined]
    log(f"Load weight begin. (rehearsal: simulated, {t.load_seconds:.1f} s)")
    if engine.stop.wait(t.load_seconds):
        return None
    log("Load weight end.")
    engine.ready.set()
    if not s.serves_http:
        log(f"Headless engine ready (node rank {s.node_rank})")
    elif s.engine == "vllm":
        log("Application startup complete.")
    elif s.is_leader:
        log("The server is fired up and ready to roll!")
    else:
        log(
            f"Dummy health check server started in background thread at {host_port(s.host, s.port)}"
        )
    return None


class ListenError(Exception):
    """A port the plan gives this node cannot be bound (in use, or not this node's address)."""


def listen(base: type, host: str, port: int, handler: type, what: str, **attrs: object):
    """A started-but-not-serving server of class `base` on host:port, with `attrs` set."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type(base.__name__, (base,), {"address_family": family})
    try:
        server = cls((host, port), handler)
    except OSError as exc:
        where = host_port(host, port)
        raise ListenError(f"{exc} while attempting to bind on address {where} ({what})") from exc
    for name, value in attrs.items():
        setattr(server, name, value)
    return server


def bind_servers(engine: Engine) -> tuple[list[socketserver.BaseServer], Rendezvous | None]:
    """Binds every port this node owns before anything starts, like the real server."""
    s = engine.settings
    servers: list[socketserver.BaseServer] = []
    rendezvous = None
    try:
        if s.serves_http:
            routes = SGLANG_ROUTES if s.is_leader else HEALTH_ROUTES
            routes = VLLM_ROUTES if s.engine == "vllm" else routes
            servers.append(
                listen(
                    EngineHTTPServer,
                    s.host,
                    s.port,
                    Handler,
                    "--host/--port",
                    engine=engine,
                    routes=routes,
                )
            )
        if s.mode == "prefill" and s.is_leader:
            servers.append(
                listen(
                    EngineHTTPServer,
                    s.host,
                    s.bootstrap_port,
                    BootstrapHandler,
                    "--disaggregation-bootstrap-port",
                    engine=engine,
                )
            )
        if s.nnodes > 1 and s.is_leader:
            host, port = split_host_port(s.dist_init_addr or "")
            rendezvous = Rendezvous(engine)
            what = "--dist-init-addr: node rank 0 must own this address"
            servers.append(
                listen(
                    _RendezvousServer, host, port, RendezvousHandler, what, rendezvous=rendezvous
                )
            )
    except ListenError:
        for server in servers:
            server.server_close()
        raise
    return servers, rendezvous
