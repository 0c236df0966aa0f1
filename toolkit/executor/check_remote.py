"""The one program `toolkit check` still runs on hosts as its own SSH command: the engine's
flag extractor (`toolkit.preflight.check_flags.extractor_program`).

It is sent on stdin to `python -` with the host's interpreter (the one the probe ran on):
it needs Python >= 3.10 (sglang's own floor) and the engine's sources, so it stays out of
the agent, which must start on any Python >= 3.8. Everything else the check asks a host
(facts, listeners, dials) goes through the agent (`toolkit/host/probe.py`, `reach.py`).
Every value that reaches the shell goes through `toolkit.shell`.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit import shell
from toolkit.preflight.check_flags import extractor_program, options_from_json
from toolkit.preflight.flags import EngineOptions


def program_command(python: str, *args: str) -> str:
    """`python - ARGS...`, quoted: the program itself goes on stdin."""
    return shell.join([python, "-", *args])


def extract_remote(session: Any, python: str, engine: str, source: str) -> EngineOptions | str:
    """Run the extractor on the host; the options, or why they could not be read."""
    command = program_command(python, engine, source)
    rc, out, err = session.run(command, stdin=extractor_program())
    lines = [line for line in out.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " / ".join(err.strip().splitlines()[-2:]) or f"exit status {rc}"
        return f"the flag extractor failed on the host ({python}): {tail}"
    if "error" in data:
        return f"cannot read {engine}'s flags from {source}: {data['error']}"
    return options_from_json(data["options"])
