"""The typed values between the control machine and a host's agent, serialised here only.

A request is a list of `Op`s (a module name and its arguments) plus check mode; the agent
answers each with one or more `Result`s. On the wire: one JSON line per request, and lines
prefixed with RESULT / PROGRESS / HEARTBEAT back. Both sides import this module, so a field
added here is added for both.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT = "@@result "
PROGRESS = "@@progress "
# Written every few seconds while a request runs: the control side gives up on a host that
# stays silent much longer (see executor/session.py).
HEARTBEAT = "@@alive"
STATUSES = ("ok", "changed", "skipped", "failed")


@dataclass(frozen=True)
class Op:
    """One task for the agent: run `module` with `args`; `name` labels its result."""

    module: str
    args: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    # Ansible's rule: a failed task ends the host's request (later tasks do not run).
    stop_on_failure: bool = True

    @property
    def label(self) -> str:
        return self.name or self.module


@dataclass
class Result:
    """What a module did: ok (nothing to change), changed, skipped (with the reason) or
    failed; `before`/`after` show a change; `data` carries what the control side reads."""

    task: str
    status: str
    msg: str = ""
    before: Any = None
    after: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    module: str = ""  # the module that produced it (set by the agent)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError("status %r is not one of %s" % (self.status, STATUSES))

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def encode_request(ops: list[Op], check: bool) -> str:
    return json.dumps({"ops": [asdict(op) for op in ops], "check": check})


def decode_request(line: str) -> tuple[list[Op], bool]:
    raw = json.loads(line)
    return [Op(**item) for item in raw["ops"]], bool(raw.get("check"))


def encode_results(results: list[Result]) -> str:
    return json.dumps([asdict(r) for r in results])


def decode_results(text: str) -> list[Result]:
    return [Result(**item) for item in json.loads(text)]
