"""Reading playbooks and roles: Ansible's layout and task syntax, validated on load.

A playbook is a list of plays: `name`, `id` (what a profile's `plays:` and the CLI refer
to), `hosts` (a group of the plan) and `roles`. A role is a folder: `defaults/main.yaml`
(the values its tasks use), `tasks/main.yaml` (a list of `- name: …` plus one module and its
arguments, optional `when:` and `tags:`), and `templates/`, `files/`. Roles are found in
`--roles-dir` / $TOOLKIT_ROLES_DIR folders first, then in toolkit's own `roles/`. A task
naming an unknown module or key is an error that names the file, the task and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from toolkit import shell, yamlio
from toolkit.errors import ToolkitError
from toolkit.names import check_role
from toolkit.resources import data_dir

HOST_GROUPS = ("all", "serving", "prefill", "decode", "mixed", "router", "endpoint", "bench")
TASK_KEYS = {"name", "when", "tags"}
PLAY_KEYS = {"name", "id", "hosts", "roles"}
ROLES_ENV = "TOOLKIT_ROLES_DIR"


class PlaybookError(ToolkitError):
    """A playbook, role or task that cannot run as written."""


@dataclass(frozen=True)
class Task:
    name: str
    module: str
    args: Any  # a mapping, or a single template string (`sysctl: "{{ tuning.sysctl }}"`)
    role: str
    folder: Path  # the role's folder: `copy: src:` and `template:` read from it
    where: str  # "roles/cpu_tuning/tasks/main.yaml, task 2" for error messages
    when: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Role:
    name: str
    folder: Path
    defaults: dict[str, Any]
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class RoleRef:
    """A role as a play names it: `name`, or `{role: name, tasks_from: stop}` for
    `tasks/stop.yaml` instead of `tasks/main.yaml`."""

    name: str
    tasks_from: str = "main"


@dataclass(frozen=True)
class Play:
    name: str
    id: str
    hosts: str
    roles: tuple[RoleRef, ...]


@dataclass
class RoleSearch:
    """Where roles come from: the user's folders first, so a user role may shadow ours."""

    extra: tuple[Path, ...] = ()
    cache: dict[str, Role] = field(default_factory=dict)

    @classmethod
    def from_env(cls, extra: tuple[Path, ...] = ()) -> RoleSearch:
        env = tuple(Path(p) for p in os.environ.get(ROLES_ENV, "").split(os.pathsep) if p)
        for folder in (*extra, *env):
            if not folder.is_dir():
                raise PlaybookError(
                    f"roles folder {folder} does not exist (from --roles-dir or ${ROLES_ENV})"
                )
        return cls(tuple(extra) + env)

    @property
    def folders(self) -> tuple[Path, ...]:
        return (*self.extra, data_dir("roles"))

    def role(self, ref: RoleRef, modules: frozenset[str]) -> Role:
        key = f"{ref.name}:{ref.tasks_from}"
        if key not in self.cache:
            self.cache[key] = _load_role(ref.name, ref.tasks_from, self.folders, modules)
        return self.cache[key]


def _load_role(
    name: str, tasks_from: str, folders: tuple[Path, ...], modules: frozenset[str]
) -> Role:
    _checked(check_role, name, "role name", "role")
    folder = next((f / name for f in folders if (f / name).is_dir()), None)
    if folder is None:
        searched = ", ".join(str(f) for f in folders)
        raise PlaybookError(f"no role {name!r} in {searched}; add it with --roles-dir DIR")
    defaults = _mapping(folder / "defaults" / "main.yaml")
    _checked(check_role, tasks_from, "tasks_from", f"role {name}")
    path = folder / "tasks" / f"{tasks_from}.yaml"
    if not path.is_file():
        raise PlaybookError(f"{path}: role {name} has no such task file")
    raw = yamlio.load_yaml(path).data
    if raw is None:
        raw = []  # an empty file: a role that does nothing here, as Ansible allows
    if not isinstance(raw, list):
        raise PlaybookError(f"{path}: expected a list of tasks, got {type(raw).__name__}")
    tasks = tuple(_task(item, i + 1, folder, path, modules) for i, item in enumerate(raw))
    return Role(name, folder, defaults, tasks)


def _task(item: Any, index: int, folder: Path, path: Path, modules: frozenset[str]) -> Task:
    where = f"{path}, task {index}"
    if not isinstance(item, dict):
        raise PlaybookError(f"{where}: a task is a mapping (`- name: …` and one module)")
    named = [k for k in item if k not in TASK_KEYS]
    if len(named) != 1:
        raise PlaybookError(
            f"{where}: a task names exactly one module besides {sorted(TASK_KEYS)}; "
            f"found {named or 'none'}"
        )
    module = str(named[0])
    if module not in modules:
        raise PlaybookError(
            f"{where}: unknown module {module!r}; known: {', '.join(sorted(modules))}"
        )
    args = item[module] if item[module] is not None else {}
    if not isinstance(args, dict | str):
        raise PlaybookError(f"{where}: {module}'s arguments must be a mapping")
    when = item.get("when")
    tags = item.get("tags") or ()
    return Task(
        name=str(item.get("name") or module),
        module=module,
        args=args,
        role=folder.name,
        folder=folder,
        where=where,
        when=str(when) if when is not None else None,
        tags=tuple(str(t) for t in ([tags] if isinstance(tags, str) else tags)),
    )


def _mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    raw = yamlio.load_yaml(path).data
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PlaybookError(f"{path}: role defaults must be a mapping")
    return dict(raw)


def _checked(check: Any, value: str, what: str, where: str) -> str:
    try:
        return str(check(value, what))
    except ValueError as exc:
        raise PlaybookError(f"{where}: {exc}") from None


def _role_ref(raw: Any, facts: dict[str, str], where: str) -> RoleRef:
    if isinstance(raw, str):
        return RoleRef(render_text(raw, facts, where))
    if isinstance(raw, dict) and "role" in raw and set(raw) <= {"role", "tasks_from"}:
        return RoleRef(
            render_text(str(raw["role"]), facts, where), str(raw.get("tasks_from", "main"))
        )
    raise PlaybookError(f"{where}: a role is a name or {{role: NAME, tasks_from: FILE}}")


def playbook_path(name_or_file: str | Path) -> Path:
    """A shipped playbook by name (`up`), or a user's file (`--playbook FILE`)."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PlaybookError(f"playbook {path} does not exist")
        return path
    return data_dir("playbooks") / f"{name_or_file}.yaml"


def load_playbook(path: Path, facts: dict[str, str]) -> list[Play]:
    """The plays of a playbook file, `{{ engine }}`-style role names filled from facts."""
    raw = yamlio.load_yaml(path).data
    if not isinstance(raw, list) or not raw:
        raise PlaybookError(f"{path}: a playbook is a non-empty list of plays")
    plays = []
    for index, item in enumerate(raw, start=1):
        where = f"{path}, play {index}"
        if not isinstance(item, dict):
            raise PlaybookError(f"{where}: a play is a mapping with name, hosts and roles")
        unknown = sorted(set(item) - PLAY_KEYS)
        if unknown:
            raise PlaybookError(
                f"{where}: unknown key(s) {unknown}; a play has {sorted(PLAY_KEYS)}"
            )
        hosts = str(item.get("hosts", ""))
        if hosts not in HOST_GROUPS:
            raise PlaybookError(f"{where}: hosts {hosts!r} is not one of {', '.join(HOST_GROUPS)}")
        roles = item.get("roles") or []
        if not isinstance(roles, list):
            raise PlaybookError(f"{where}: roles must be a list of role names")
        name = str(item.get("name") or f"play {index}")
        play_id = _checked(check_role, str(item.get("id") or f"play{index}"), "play id", where)
        filled = tuple(_role_ref(r, facts, where) for r in roles)
        plays.append(Play(name, play_id, hosts, filled))
    ids = [p.id for p in plays]
    if len(set(ids)) != len(ids):
        raise PlaybookError(f"{path}: play ids must be unique, got {ids}")
    return plays


# ----------------------------------------------------------------------------- templating

ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
# `{{ value | quote }}` in a `shell:` task: the one quoting helper, as everywhere else.
ENV.filters["quote"] = shell.quote


def render_text(text: str, values: dict[str, Any], where: str) -> str:
    try:
        return ENV.from_string(text).render(values)
    except jinja2.TemplateError as exc:
        raise PlaybookError(f"{where}: {text!r}: {exc}") from exc


def render_value(value: Any, values: dict[str, Any], where: str) -> Any:
    """Templates in a task's arguments: `"{{ x }}"` alone keeps x's type (a mapping, a
    number), text with a template in it renders to text; mappings and lists recurse."""
    if isinstance(value, dict):
        return {k: render_value(v, values, where) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, values, where) for v in value]
    if not isinstance(value, str) or "{" not in value:
        return value
    stripped = value.strip()
    if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return evaluate(stripped[2:-2], values, where)
    return render_text(value, values, where)


def evaluate(expression: str, values: dict[str, Any], where: str) -> Any:
    try:
        return ENV.compile_expression(expression, undefined_to_none=False)(values)
    except jinja2.TemplateError as exc:
        raise PlaybookError(f"{where}: {expression.strip()!r}: {exc}") from exc
