"""Roles and playbooks as data (Ansible's shape), and the registry of the tasks they name.

A role is a folder: `defaults/main.yaml` (settings), `tasks/main.yaml` (task names, in
order) and `templates/`. The logic behind a task name lives in Python and is registered in
TASKS: the host-side agent operation that carries it out, or the executor phase that does.
A playbook lists which roles run on which host group, in order. Loading validates all of it,
so a misspelt task or role is an error, never a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ToolkitError
from toolkit.resources import data_dir

# Task name → where it is implemented ("agent:<op>" runs in toolkit/remote/agent.py on the
# host; "executor:<function>" is orchestration on the control machine).
TASKS: dict[str, str] = {
    "cpu_governor": "agent:cpu_governor",
    "sysctl": "agent:sysctl",
    "detect_nic": "agent:nic",
    "check_sources": "executor:check.env",
    "upload_launch_script": "agent:write_files",
    "start_detached": "agent:start",
    "wait_healthy": "agent:wait_http",
    "wait_router_ready": "agent:wait_http",
    "smoke_request": "agent:http",
    "run_bench": "agent:run",
    "fetch_results": "agent:read_file",
}
HOST_GROUPS = ("serving", "prefill", "decode", "mixed", "router", "bench")


@dataclass(frozen=True)
class Role:
    name: str
    defaults: dict[str, Any]
    tasks: tuple[str, ...]
    templates: tuple[Path, ...]


@dataclass(frozen=True)
class Play:
    name: str
    hosts: str
    roles: tuple[str, ...]
    action: str = "run"


@cache
def load_role(name: str) -> Role:
    folder = data_dir("roles") / name
    if not folder.is_dir():
        raise ToolkitError(f"no role {name!r} in {folder.parent}")
    defaults = _yaml(folder / "defaults" / "main.yaml") or {}
    tasks_file = folder / "tasks" / "main.yaml"
    tasks = tuple(item["task"] for item in (_yaml(tasks_file) or []))
    for task in tasks:
        if task not in TASKS:
            raise ToolkitError(
                f"{tasks_file}: task {task!r} is not registered; known: {', '.join(TASKS)}"
            )
    templates = tuple(sorted((folder / "templates").glob("*.j2")))
    return Role(name, defaults, tasks, templates)


def role_defaults(name: str) -> dict[str, Any]:
    return load_role(name).defaults


def load_playbook(name: str, facts: dict[str, str]) -> list[Play]:
    """A playbook's plays, with `{{ platform }}`-style role names filled from facts."""
    path = data_dir("playbooks") / f"{name}.yaml"
    plays = []
    for raw in _yaml(path) or []:
        roles = tuple(_fill(str(r), facts, path) for r in raw["roles"])
        if raw["hosts"] not in HOST_GROUPS:
            raise ToolkitError(f"{path}: hosts {raw['hosts']!r} is not one of {HOST_GROUPS}")
        for role in roles:
            load_role(role)
        plays.append(Play(raw["name"], raw["hosts"], roles, raw.get("action", "run")))
    return plays


def _fill(text: str, facts: dict[str, str], path: Path) -> str:
    for key, value in facts.items():
        text = text.replace("{{ " + key + " }}", value)
    if "{{" in text:
        raise ToolkitError(f"{path}: {text!r} names a fact toolkit does not provide")
    return text


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None
