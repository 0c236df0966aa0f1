"""The host-side agent: one request of tasks per play or phase, results as typed values.

The control machine starts it once per host and command (`serve`: one JSON request per line
on stdin, answered on stdout), so every phase of `toolkit up` reuses one login shell and one
Python on each host; a host needs nothing but Python 3.8+. Each task names a module
(`module.py`): it reads the host, decides, and acts only on a difference. Long waits stream
PROGRESS lines so the control side can draw a live view; a request's last line is RESULT
with every task's outcome.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import json
import os
import sys
import threading
import time

# Importing the module files registers their modules.
# (`toolkit check`'s modules, probe and reach, register themselves where the check's
# bundle carries them: see bundle.CHECK_ONLY.)
from toolkit.host import (  # noqa: F401
    commands,
    files,
    filesystem,
    process,
    run_state,
    system,
    wait,
    wait_for,
)
from toolkit.host.module import MODULES
from toolkit.host.protocol import (
    HEARTBEAT,
    PROGRESS,
    RESULT,
    Op,
    Result,
    decode_request,
    encode_results,
)

# The control side gives up on a host silent for much longer than this, and a heartbeat
# that cannot be written (the session is gone) ends this agent instead of letting it wait
# out its task.
HEARTBEAT_S = 2.0
_OUT = threading.Lock()


def emit(line: str) -> None:
    """One line to the control side; lines from the heartbeat thread never interleave."""
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def progress(event: dict) -> None:
    emit(PROGRESS + json.dumps(event))


def run_op(op: Op, check: bool) -> list[Result]:
    module = MODULES.get(op.module)
    if module is None:
        known = ", ".join(sorted(MODULES))
        return [
            Result(op.label, "failed", "no module %r on the host (known: %s)" % (op.module, known))
        ]
    try:
        results = module.run(op.args, check, progress, op.name)
    except Exception as exc:  # report, never die silently: the control side needs JSON
        results = [Result(op.label, "failed", "%s: %s" % (type(exc).__name__, exc))]
    for item in results:
        item.module = op.module
    return results


def handle(ops: list[Op], check: bool) -> list[Result]:
    results: list[Result] = []
    for op in ops:
        out = run_op(op, check)
        results.extend(out)
        if op.stop_on_failure and any(r.failed for r in out):
            break
    return results


def _heartbeat(busy: threading.Event) -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        if not busy.is_set():
            continue
        try:
            emit(HEARTBEAT)
        except (OSError, ValueError):
            os._exit(1)  # nobody is listening: the control side is gone or gave up on us


def serve() -> None:
    """Answer requests, one JSON line each, until stdin closes (the session ended)."""
    busy = threading.Event()
    threading.Thread(target=_heartbeat, args=(busy,), daemon=True).start()
    for line in iter(sys.stdin.buffer.readline, b""):
        busy.set()
        try:
            ops, check = decode_request(line.decode())
            results = handle(ops, check)
        except Exception as exc:  # a malformed request must not end the session
            results = [Result("agent", "failed", "bad request: %s: %s" % (type(exc).__name__, exc))]
        finally:
            busy.clear()
        emit(RESULT + encode_results(results))
