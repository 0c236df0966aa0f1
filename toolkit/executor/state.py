"""Run records: what `up` started, kept locally and on every host.

The local record (under $TOOLKIT_STATE_DIR, default ~/.local/state/toolkit) lets `bench`,
`status`, `logs` and `down` run without arguments after `up`. Each host also keeps the
record in its run directory and a pointer `active.json` in its workdir, so `down -i INV`
works when the local state is lost. Secrets are masked in both.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.plan import NodePlan, Plan, plan_from_dict


def state_dir() -> Path:
    base = os.environ.get("TOOLKIT_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "toolkit"


def new_run_id(profile: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}-{secrets.token_hex(2)}"


def run_dir(workdir: str, run_id: str) -> str:
    return f"{workdir.rstrip('/')}/runs/{run_id}"


def node_files(workdir: str, run_id: str, node: NodePlan) -> dict[str, str]:
    base = f"{run_dir(workdir, run_id)}/{node.name}"
    return {"script": f"{base}.sh", "log": f"{base}.log", "pidfile": f"{base}.pid"}


def process_files(workdir: str, run_id: str, kind: str) -> dict[str, str]:
    base = f"{run_dir(workdir, run_id)}/{kind}"
    return {"script": f"{base}.sh", "log": f"{base}.log", "pidfile": f"{base}.pid"}


@dataclass
class RunRecord:
    run_id: str
    plan: dict[str, Any]
    rehearse: bool
    started: float
    # host → {"governor": {path: old}, "sysctl": {key: old}}: what `down` restores.
    tuning: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # node name → detected interface (when the inventory gave none).
    nics: dict[str, str] = field(default_factory=dict)
    stopped: float | None = None
    results: list[str] = field(default_factory=list)

    @property
    def plan_obj(self) -> Plan:
        return plan_from_dict(self.plan)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        return cls(**json.loads(text))


def save(record: RunRecord, make_current: bool = True) -> Path:
    """Write the record; `make_current`: later commands without --run default to it (`down`
    of an older run must not take that from the live one)."""
    runs = state_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{record.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.to_json())
    tmp.chmod(0o600)
    tmp.replace(path)
    if make_current:
        (state_dir() / "current").write_text(record.run_id + "\n")
    return path


def load(run_id: str | None = None) -> RunRecord:
    """The named run, or the current one; a clear error when there is none."""
    if run_id is None:
        pointer = state_dir() / "current"
        if not pointer.is_file():
            raise ToolkitError(
                f"no current run in {state_dir()}: start one with `toolkit up`, or name one "
                "with --run ID; `toolkit down -i INVENTORY` finds a run from the records kept "
                "on the hosts"
            )
        run_id = pointer.read_text().strip()
    path = state_dir() / "runs" / f"{run_id}.json"
    if not path.is_file():
        raise ToolkitError(f"no record of run {run_id} in {path.parent}")
    return RunRecord.from_json(path.read_text())


def forget_current(run_id: str) -> None:
    pointer = state_dir() / "current"
    if pointer.is_file() and pointer.read_text().strip() == run_id:
        pointer.unlink()
