"""The model server's HTTP API on the standard library's `http.server`.

uvicorn look-alike: HTTP/1.1 with keep-alive, Content-Length or chunked request bodies,
server-sent events in chunks (close-delimited for an HTTP/1.0 client), errors as JSON. Also
the prefill leader's KV bootstrap port, which decode engines ask when a room is done.

Part of the rehearsal engine (`engine.py` is the entry point); standard library only.

`http.server` costs an engine start about 25 ms more CPU than the hand-written server it
replaced (mostly http.client's ssl and email imports; 81 -> 104 ms for `engine.py --help`,
median of 20, 2 cores). For 16 engines on 2 cores that is ~0.4 CPU-s, which the orchestration
benchmark at 16 hosts did not show consistently (issue 10's closing numbers).
"""

from __future__ import annotations

import http.server
import json
import select
import socket
import socketserver
import time
from typing import Callable  # noqa: UP035 (collections.abc is not subscriptable on 3.8)
from urllib.parse import parse_qs, urlsplit

if __package__:  # imported as toolkit.rehearsal.engine_http
    from .engine_api import (
        OpenAIStream,
        chat_jobs,
        completion_jobs,
        generate_jobs,
        generate_object,
        metrics_text,
        model_info,
        models_list,
        server_info,
    )
    from .engine_core import Aborted, Engine, EngineError, Job
    from .engine_settings import VLLM_VERSION, host_port, log
else:  # uploaded next to engine.py, whose directory is on sys.path
    from engine_api import (  # type: ignore[no-redef]
        OpenAIStream,
        chat_jobs,
        completion_jobs,
        generate_jobs,
        generate_object,
        metrics_text,
        model_info,
        models_list,
        server_info,
    )
    from engine_core import Aborted, Engine, EngineError, Job  # type: ignore[no-redef]
    from engine_settings import VLLM_VERSION, host_port, log  # type: ignore[no-redef]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class EngineHTTPServer(http.server.ThreadingHTTPServer):
    """One thread per connection; many at once (a benchmark opens hundreds)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which stalls for seconds where no
        # DNS resolver answers (test network namespaces, air-gapped clusters).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port


class BaseHandler(http.server.BaseHTTPRequestHandler):
    """What both HTTP ports share: HTTP/1.1 keep-alive and errors shaped like uvicorn's."""

    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"

    def version_string(self) -> str:
        return self.server_version  # uvicorn names no Python version

    def parse_request(self) -> bool:
        if self.raw_requestline.startswith(b"PRI * HTTP/2"):
            # The router's gRPC probe opens with an h2c preface. http.server would answer it
            # as HTTP/0.9 (a bare body, no status line); answer as an HTTP/1.1-only server.
            self.command, self.request_version = "PRI", "HTTP/1.1"
            self.requestline = "PRI * HTTP/2.0"
            self.send_error(505, "HTTP/2 is not supported; this server speaks HTTP/1.1")
            return False
        return super().parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """FastAPI's `{"detail": ...}` instead of http.server's HTML page; closes, like it."""
        body = _dumps({"detail": message or self.responses.get(code, ("",))[0]})
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # the real bootstrap server logs no requests; Handler logs uvicorn's line

    def log_message(self, format: str, *args: object) -> None:
        log(f"{host_port(*self.client_address[:2])} - {format % args}", "WARNING")


class Handler(BaseHandler):
    """The model server's routes (`server.routes`: path -> (methods, handler method))."""

    @property
    def engine(self) -> Engine:
        return self.server.engine  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")  # no route lists HEAD: 405, as FastAPI answers for GET routes

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        peer = host_port(*self.client_address[:2])
        try:
            code = int(code)
            phrase = self.responses[code][0]
        except (ValueError, KeyError):
            phrase = ""
        log(f'INFO:     {peer} - "{self.requestline}" {code} {phrase}')

    def _dispatch(self, method: str) -> None:
        self._streaming = False
        try:
            raw = self._read_body()
            path = urlsplit(self.path).path
            routes = self.server.routes  # type: ignore[attr-defined]
            if path not in routes:
                return self._json(404, {"detail": "Not Found"})
            methods, action = routes[path]
            if method not in methods:
                return self._json(405, {"detail": "Method Not Allowed"})
            action(self, raw)
        except EngineError as exc:
            log(f"{method} {self.path} failed: {exc.message}", "ERROR")
            self._json(exc.status, {"error": {"message": exc.message, "code": exc.status}})
        except (Aborted, OSError):
            self.close_connection = True
        except Exception as exc:  # a malformed body we did not foresee: answer, do not hang up
            log(f"{method} {self.path} failed: {exc!r}", "ERROR")
            if self._streaming:
                self.close_connection = True
            else:
                self._json(500, {"error": {"message": repr(exc), "code": 500}})

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise EngineError(400, f"invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise EngineError(400, "the JSON body must be an object")
        return body

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, _dumps(obj), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _client_gone(self) -> bool:
        """True once the peer closed the connection (poll: no FD_SETSIZE limit)."""
        try:
            poller = select.poll()
            poller.register(self.connection, select.POLLIN)
            readable = poller.poll(0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- streaming

    def _start_stream(self) -> None:
        self._streaming = True
        # HTTP/1.1 clients (the router, bench_serving's aiohttp) get chunks on a connection
        # they keep; an HTTP/1.0 client cannot read chunks, so its body ends when we close.
        self._chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()

    def _sse(self, payload: bytes) -> None:
        data = b"data: " + payload + b"\n\n"
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def _end_stream(self) -> None:
        self._sse(b"[DONE]")
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _run(
        self, jobs: list[Job], stream: bool, chunks: Callable[[], list[dict]], final: Callable
    ) -> None:
        """Runs jobs; streams `chunks()` after every step, or answers `final()` at the end."""
        try:
            self._run_jobs(jobs, stream, chunks, final)
        except BaseException as exc:
            if self.engine.settings.mode == "prefill":  # so the paired decode stops waiting
                for job in jobs:
                    if job.bootstrap is not None:
                        self.engine.board.settle(job.bootstrap.room, "failed", repr(exc))
            raise

    def _run_jobs(
        self, jobs: list[Job], stream: bool, chunks: Callable[[], list[dict]], final: Callable
    ) -> None:
        if not self.engine.ready.is_set():
            raise EngineError(503, "the server is still loading (rehearsal)")
        self.engine.check_bootstrap(jobs)
        steps = self.engine.run(jobs, self._client_gone)
        if not stream:
            for _ in steps:
                pass
            return self._json(200, final())
        self._start_stream()
        try:
            for _ in steps:
                for chunk in chunks():
                    self._sse(_dumps(chunk))
        except EngineError as exc:
            log(f"{self.command} {self.path} failed: {exc.message}", "ERROR")
            self._sse(_dumps({"error": {"message": exc.message, "code": exc.status}}))
        self._end_stream()
        return None

    # -- routes

    def health(self, raw: bytes) -> None:
        self._send(200 if self.engine.ready.is_set() else 503, b"", "text/plain")

    def generate(self, raw: bytes) -> None:
        body = self._body(raw)
        jobs, batch = generate_jobs(self.engine, body)
        started = time.monotonic()

        def objects() -> list[dict]:
            return [generate_object(self.engine, job, started) for job in jobs]

        stream = bool(body.get("stream")) and not batch
        self._run(jobs, stream, objects, lambda: objects() if batch else objects()[0])

    def completions(self, raw: bytes) -> None:
        self._openai(raw, chat=False)

    def chat_completions(self, raw: bytes) -> None:
        self._openai(raw, chat=True)

    def _openai(self, raw: bytes, chat: bool) -> None:
        body = self._body(raw)
        engine = self.engine
        model = body.get("model") or engine.settings.model_id
        if engine.settings.engine == "vllm" and model not in (
            engine.settings.model_id,
            engine.settings.model_path,
        ):
            raise EngineError(404, f"The model `{model}` does not exist.")
        jobs = chat_jobs(engine, body) if chat else completion_jobs(engine, body)
        view = OpenAIStream(engine, jobs, chat, model)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunks() -> list[dict]:
            out = view.step()
            if usage and all(job.finished for job in jobs):
                out.append(view.usage_chunk())
            return out

        self._run(jobs, bool(body.get("stream")), chunks, view.response)

    def server_info(self, raw: bytes) -> None:
        self._json(200, server_info(self.engine))

    def model_info(self, raw: bytes) -> None:
        self._json(200, model_info(self.engine))

    def models(self, raw: bytes) -> None:
        self._json(200, models_list(self.engine))

    def flush_cache(self, raw: bytes) -> None:
        if self.engine.running:
            return self._text(400, "Cache not flushed: requests are running (rehearsal).\n")
        self._text(200, "Cache flushed.\nPlease check backend logs for more details.\n")

    def get_load(self, raw: bytes) -> None:
        e = self.engine
        load = {"dp_rank": 0, "num_reqs": e.running, "num_waiting_reqs": e.waiting}
        load["num_tokens"] = e.tokens_in_flight
        self._json(200, [load])

    def metrics(self, raw: bytes) -> None:
        self._send(200, metrics_text(self.engine).encode(), "text/plain; version=0.0.4")

    def version(self, raw: bytes) -> None:
        self._json(200, {"version": VLLM_VERSION})

    def reset_prefix_cache(self, raw: bytes) -> None:
        self._send(200, b"", "text/plain")


GET, POST, BOTH = ("GET",), ("POST",), ("GET", "POST")
HEALTH_ROUTES = {p: (GET, Handler.health) for p in ("/health", "/health_generate", "/ping")}
SGLANG_ROUTES = dict(
    HEALTH_ROUTES,
    **{
        "/ready": (GET, Handler.health),
        "/server_info": (GET, Handler.server_info),
        "/get_server_info": (GET, Handler.server_info),
        "/model_info": (GET, Handler.model_info),
        "/get_model_info": (GET, Handler.model_info),
        "/v1/models": (GET, Handler.models),
        "/generate": (POST, Handler.generate),
        "/v1/completions": (POST, Handler.completions),
        "/v1/chat/completions": (POST, Handler.chat_completions),
        "/flush_cache": (BOTH, Handler.flush_cache),
        "/get_load": (GET, Handler.get_load),
        "/metrics": (GET, Handler.metrics),
    },
)
VLLM_ROUTES = {
    "/health": (GET, Handler.health),
    "/ping": (BOTH, Handler.health),
    "/version": (GET, Handler.version),
    "/v1/models": (GET, Handler.models),
    "/v1/completions": (POST, Handler.completions),
    "/v1/chat/completions": (POST, Handler.chat_completions),
    "/reset_prefix_cache": (POST, Handler.reset_prefix_cache),
    "/metrics": (GET, Handler.metrics),
}


class BootstrapHandler(BaseHandler):
    """Prefill's KV bootstrap port: answers port checks, and tells decode when a room is done."""

    def do_GET(self) -> None:
        self._read_body()
        url = urlsplit(self.path)
        engine: Engine = self.server.engine  # type: ignore[attr-defined]
        if url.path == "/rehearsal/bootstrap":
            info = {
                "role": "prefill-bootstrap",
                "rehearsal": True,
                "model": engine.settings.model_id,
            }
            return self._reply(_dumps(dict(info, http_port=engine.settings.port)))
        if url.path == "/rehearsal/kv":
            query = parse_qs(url.query)
            wait = min(float(query.get("wait", ["1"])[0]), 5.0)
            state, message = engine.board.wait(query.get("room", [""])[0], wait)
            return self._reply(_dumps({"state": state, "message": message}))
        self._reply(b"OK" if url.path == "/health" else b"{}")

    def do_PUT(self) -> None:  # prefill ranks >= 1 register with PUT /route
        self._read_body()
        self._reply(b"OK")

    do_POST = do_DELETE = do_PUT

    def _read_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
