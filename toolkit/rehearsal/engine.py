#!/usr/bin/env python3
"""Rehearsal engine: a CPU stand-in for `python -m sglang.launch_server` and `vllm serve`.

`toolkit up --rehearse` runs the real cluster plan but starts this file on every node instead
of the model server, so hosts, ports, ranks, router and benchmark can be rehearsed in seconds
before a 20-minute weight load. It speaks the sglang server's HTTP protocol closely enough for
the real sglang-router (PD mode) and the real `sglang.bench_serving`, with simulated timing:

    python3 engine.py [timing options] -- <sglang launch_server flags>
    python3 engine.py --engine vllm [timing options] -- serve MODEL <vllm serve flags>

Flags after `--` it does not know are ignored. What is simulated for real, because these are
the mistakes a rehearsal exists to catch:
- multi-node rendezvous: rank 0 listens on the `--dist-init-addr` port, ranks >= 1 must reach
  it (with the same `--nnodes`, a unique `--node-rank`) or exit non-zero;
- PD bootstrap: prefill rank 0 listens on `--disaggregation-bootstrap-port`; a decode engine
  fetches each request's KV from the `bootstrap_host:bootstrap_port` the router injected, so a
  router pointed at the wrong prefill or bootstrap port fails requests with a clear error;
- timing: prefill time = ttft-base + input_tokens / prefill-rate (one prefill lane per engine),
  then one token per TPOT, TPOT = tpot + tpot-slope * requests decoding on this engine.

Standard library only, Python >= 3.8: it is uploaded to hosts that have no toolkit installed,
together with its sibling modules (`toolkit.rehearsal.engine_files()`), which it imports by
plain module name from its own directory:

    engine_settings  the command line: timing options, the server flags it acts on
    engine_core      the simulated server: admission, prefill lane, decode, KV hand-off
    engine_api       request and response bodies (sglang and OpenAI routes, metrics)
    engine_http      the HTTP server (`http.server`) and its routes
    engine_cluster   the multi-node rendezvous, the simulated load, binding the ports
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

if __package__:  # imported as toolkit.rehearsal.engine (tests)
    from .engine_cluster import ListenError, bind_servers, startup
    from .engine_core import Engine
    from .engine_settings import (
        VERSION,
        Settings,
        Timing,
        host_port,
        log,
        parse_command_line,
        preflight,
    )
else:  # run as a script; this file's directory is on sys.path
    from engine_cluster import ListenError, bind_servers, startup  # type: ignore[no-redef]
    from engine_core import Engine  # type: ignore[no-redef]
    from engine_settings import (  # type: ignore[no-redef]
        VERSION,
        Settings,
        Timing,
        host_port,
        log,
        parse_command_line,
        preflight,
    )


def serve(settings: Settings, timing: Timing) -> int:
    engine = Engine(settings, timing)
    log(
        "Rehearsal engine {} ({}) argv: {}".format(VERSION, settings.engine, " ".join(sys.argv[1:]))
    )
    problem = preflight(settings)
    if problem:
        log(problem, "ERROR")
        return 1
    try:
        servers, rendezvous = bind_servers(engine)
    except ListenError as exc:
        log(str(exc), "ERROR")
        return 1
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Only a list append: a handler that took a lock (Event.set) could deadlock with the
        # main thread it interrupts inside Event.wait.
        signal.signal(signum, lambda number, frame: received.append(number))
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    if settings.serves_http:
        url = f"http://{host_port(settings.host, settings.port)}"
        if settings.engine == "vllm":
            log(f"Starting vLLM API server 0 on {url}")
        log(f"Uvicorn running on {url} (Press CTRL+C to quit)")
    if settings.mode == "prefill" and settings.is_leader:
        log(f"Bootstrap server listening on {host_port(settings.host, settings.bootstrap_port)}")
    if rendezvous is not None:
        log(f"Rendezvous listening on {settings.dist_init_addr} for {settings.nnodes - 1} node(s)")
    threading.Thread(target=startup, args=(engine, rendezvous), daemon=True).start()
    if timing.fail_after_seconds is not None:
        message = f"Simulated crash after {timing.fail_after_seconds} s (--fail-after-seconds)"
        timer = threading.Timer(timing.fail_after_seconds, engine.fail, args=(message,))
        timer.daemon = True
        timer.start()
    # A few wake-ups a second, not a busy poll: sixteen idle engines share one machine in a
    # rehearsal, and a failure elsewhere sets `stop` at once.
    while not received and not engine.stop.wait(0.2):
        pass
    if received:
        log(f"Received {signal.Signals(received[0]).name}; shutting down")
    engine.stop.set()
    if rendezvous is not None:
        rendezvous.close()
    rank0 = getattr(engine, "rank0_socket", None)
    if rank0 is not None:
        with contextlib.suppress(OSError):
            rank0.sendall(b"BYE\n")
    for server in servers:
        server.shutdown()
        server.server_close()
    log(f"Finished server process (exit status {engine.exit_code})")
    return engine.exit_code


def main(argv: list[str] | None = None) -> int:
    timing, settings = parse_command_line(sys.argv[1:] if argv is None else argv)
    return serve(settings, timing)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # daemon threads may be mid-stream; do not wait for them
