"""Ansible-compatible YAML inventory, read as Ansible reads it.

Structure: top-level groups (normally `all`), each with optional `hosts`, `vars` and
`children`. Variables are merged from the outermost group inwards and host vars win, as in
Ansible. Toolkit's groups are `prefill`, `decode` and `mixed` (serving hosts, in the order
written: order decides instances and ranks), plus optional `router` and `bench`.

Unknown variables are errors, never ignored: a misspelt `ansible_hots` would otherwise send
SSH to the wrong address. Host, group and user names, addresses and paths are validated here
(`toolkit.names`), where they enter, so nothing later can be handed a name that breaks a
command line. Membership is kept in ordered dicts, so a large inventory loads in linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from toolkit import names
from toolkit.errors import InventoryError
from toolkit.yamlio import KeyPath, Located, load_yaml, parse_yaml

SERVING_GROUPS = ("prefill", "decode", "mixed")
ROLE_GROUPS = (*SERVING_GROUPS, "router", "bench")
GROUP_KEYS = ("hosts", "vars", "children")

# Connection variables honoured, with Ansible's meaning.
CONNECTION_VARS = {
    "ansible_host": str,
    "ansible_port": int,
    "ansible_user": str,
    "ansible_ssh_private_key_file": str,
    "ansible_become": bool,
    "ansible_become_user": str,
    "ansible_connection": str,
    "ansible_python_interpreter": str,
}
# Deployment variables toolkit reads.
TOOLKIT_VARS = {
    "model_path": str,
    "nic": str,
    "python": str,
    "workdir": str,
    # docker | podman | none, and the image: override the profile's container section here.
    "container_runtime": str,
    "container_image": str,
}
KNOWN_VARS = {**CONNECTION_VARS, **TOOLKIT_VARS}
CONNECTIONS = ("ssh", "local")
DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = "/var/tmp/toolkit"

_RANGE = re.compile(r"\[(\d+):(\d+)\]")
# More hosts than any cluster toolkit drives; a pattern such as node[0:999999999] is a typo.
MAX_HOSTS = 10_000
# Group memberships (a host in a group, counted once per listing): bounds the work a file of
# a few lines can cause by listing a large group as the child of many others.
MAX_MEMBERSHIPS = 100 * MAX_HOSTS
# Checks for variable values that reach command lines, paths or SSH (value → value or ValueError).
_VALUE_CHECKS: dict[str, Any] = {
    "ansible_host": lambda v: names.check_host(v, "ansible_host"),
    "ansible_user": names.check_user,
    "ansible_become_user": names.check_user,
    "nic": names.check_nic,
    "ansible_ssh_private_key_file": lambda v: names.check_text(v, "ansible_ssh_private_key_file"),
    "ansible_python_interpreter": lambda v: names.check_text(v, "ansible_python_interpreter"),
    "python": lambda v: names.check_text(v, "python"),
    "workdir": lambda v: names.check_text(v, "workdir"),
    "model_path": lambda v: names.check_text(v, "model_path"),
}


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged variables."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    become: bool = False
    become_user: str | None = None
    connection: str = "ssh"
    python: str = DEFAULT_PYTHON
    workdir: str = DEFAULT_WORKDIR
    model_path: str | None = None
    nic: str | None = None
    groups: tuple[str, ...] = ()
    container_runtime: str | None = None
    container_image: str | None = None

    @property
    def is_local(self) -> bool:
        return self.connection == "local"


@dataclass(frozen=True)
class Inventory:
    """Hosts in order of first appearance, and each group's members in written order."""

    path: str
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Where each group's `hosts:` block is, for error messages.
    group_lines: dict[str, str] = field(default_factory=dict)

    def group(self, name: str) -> list[Host]:
        return [self.hosts[h] for h in self.groups.get(name, ())]

    def where(self, group: str) -> str:
        return self.group_lines.get(group, self.path)


def load_inventory(path: Path | str) -> Inventory:
    """Load and validate an inventory file."""
    return _build(load_yaml(path))


def parse_inventory(text: str, path: str = "<inventory>") -> Inventory:
    return _build(parse_yaml(text, path))


def pattern_size(name: str) -> int:
    """How many hosts a pattern names, computed without expanding it."""
    size = 1
    for lo, hi in _RANGE.findall(name):
        size *= max(int(hi) - int(lo) + 1, 0)
    return size


def expand_host_pattern(name: str) -> list[str]:
    """Ansible numeric ranges: `node[01:03]` → node01, node02, node03."""
    match = _RANGE.search(name)
    if not match:
        return [name]
    if pattern_size(name) > MAX_HOSTS:
        raise ValueError(f"{name!r} names {pattern_size(name):,} hosts; at most {MAX_HOSTS:,}")
    lo, hi = match.group(1), match.group(2)
    width = len(lo) if lo.startswith("0") else 0
    names = []
    for i in range(int(lo), int(hi) + 1):
        expanded = name[: match.start()] + f"{i:0{width}d}" + name[match.end() :]
        names.extend(expand_host_pattern(expanded))
    return names


class _Walker:
    """Collects hosts, group membership and per-host variable layers."""

    def __init__(self, doc: Located) -> None:
        self.doc = doc
        self.order: list[str] = []
        # Ordered sets (dict keys): written order, constant-time membership.
        self.groups: dict[str, dict[str, None]] = {}
        self.host_groups: dict[str, dict[str, None]] = {}
        self.group_lines: dict[str, str] = {}
        # host → list of (depth, vars) layers, merged in depth order, host vars last.
        self.layers: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
        self.seq = 0
        self.memberships = 0

    def fail(self, keys: KeyPath, message: str) -> InventoryError:
        return InventoryError(f"{self.doc.where(keys)}: {message}")

    def join(self, group: str, host: str) -> None:
        self.memberships += 1
        if self.memberships > MAX_MEMBERSHIPS:
            raise InventoryError(
                f"{self.doc.path}: groups and children add up to more than "
                f"{MAX_MEMBERSHIPS:,} host memberships; is a large group listed as a child "
                "of many others?"
            )
        self.groups.setdefault(group, {})[host] = None
        self.host_groups.setdefault(host, {})[group] = None

    def walk_group(self, name: str, body: Any, keys: KeyPath, depth: int, parents: list[str]):
        try:
            names.check_group(name)
        except ValueError as exc:
            raise self.fail(keys, f"{exc}") from None
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise self.fail(keys, f"group {name!r} must be a mapping with hosts/vars/children")
        for key in body:
            if key not in GROUP_KEYS:
                hint = _hint(str(key), GROUP_KEYS)
                raise self.fail(
                    (*keys, key),
                    f"unknown key {key!r} in group {name!r}; a group holds only "
                    f"{', '.join(GROUP_KEYS)}{hint}",
                )
        group_vars = self.check_vars(body.get("vars") or {}, (*keys, "vars"))
        members = self.groups.setdefault(name, {})
        lineage = [*parents, name]
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise self.fail((*keys, "hosts"), "`hosts` must be a mapping of host name → vars")
        if hosts:
            self.group_lines.setdefault(name, self.doc.where((*keys, "hosts")))
        for pattern, host_vars in hosts.items():
            where = (*keys, "hosts", pattern)
            try:
                expanded = expand_host_pattern(str(pattern))
                for host in expanded:
                    names.check_host(host)
            except ValueError as exc:
                raise self.fail(where, f"{exc}") from None
            if len(self.layers) + sum(h not in self.layers for h in expanded) > MAX_HOSTS:
                raise self.fail(where, f"the inventory names more than {MAX_HOSTS:,} hosts")
            for host in expanded:
                self.add_host(host, lineage, host_vars, where)
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise self.fail((*keys, "children"), "`children` must be a mapping of groups")
        for child, child_body in children.items():
            self.walk_group(str(child), child_body, (*keys, "children", child), depth + 1, lineage)
            for host in list(self.groups.get(str(child), {})):
                self.join(name, host)
        # Group vars apply to every host below this group, at this depth.
        for host in members:
            self.seq += 1
            self.layers.setdefault(host, []).append((depth, self.seq, group_vars))

    def add_host(self, host: str, lineage: list[str], host_vars: Any, keys: KeyPath) -> None:
        if host not in self.layers:
            self.order.append(host)
            self.layers[host] = []
        for group in lineage:
            self.join(group, host)
        checked = self.check_vars(host_vars or {}, keys)
        self.seq += 1
        self.layers[host].append((10_000, self.seq, checked))

    def check_vars(self, values: Any, keys: KeyPath) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise self.fail(keys, "variables must be a mapping of name → value")
        for name, value in values.items():
            if name not in KNOWN_VARS:
                raise self.fail(
                    (*keys, name),
                    f"unknown variable {name!r}{_hint(str(name), KNOWN_VARS)}; "
                    f"known: {', '.join(KNOWN_VARS)}",
                )
            expected = KNOWN_VARS[name]
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = True  # a bare number as a host address or path is still usable as text
            if not ok:
                raise self.fail((*keys, name), f"{name} must be {expected.__name__}, got {value!r}")
            if name in _VALUE_CHECKS:
                try:
                    _VALUE_CHECKS[name](str(value))
                except ValueError as exc:
                    raise self.fail((*keys, name), f"{exc}") from None
        return values


def _hint(word: str, choices: Any) -> str:
    close = get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(doc: Located) -> Inventory:
    if doc.data is None:
        raise InventoryError(f"{doc.path}: the inventory is empty; see inventory/a3-1p1d.yaml")
    if not isinstance(doc.data, dict):
        raise InventoryError(f"{doc.where(())}: an inventory is a mapping of groups (e.g. `all:`)")
    walker = _Walker(doc)
    for name, body in doc.data.items():
        walker.walk_group(str(name), body, (name,), 0, [] if name == "all" else ["all"])
    rank = {group: i for i, group in enumerate(walker.groups)}
    hosts = {name: _make_host(name, walker, rank) for name in walker.order}
    if not hosts:
        raise InventoryError(f"{doc.path}: the inventory lists no hosts")
    groups = {g: tuple(m) for g, m in walker.groups.items()}
    for role in ("router", "bench"):
        if len(groups.get(role, ())) > 1:
            raise InventoryError(
                f"{walker.group_lines.get(role, doc.path)}: group {role!r} has "
                f"{len(groups[role])} hosts; it takes one"
            )
    return Inventory(path=doc.path, hosts=hosts, groups=groups, group_lines=walker.group_lines)


def _make_host(name: str, walker: _Walker, rank: dict[str, int]) -> Host:
    merged: dict[str, Any] = {}
    for _, _, layer in sorted(walker.layers[name], key=lambda t: (t[0], t[1])):
        merged.update(layer)
    connection = str(merged.get("ansible_connection", "ssh"))
    if connection not in CONNECTIONS:
        raise InventoryError(
            f"{walker.doc.path}: host {name!r}: ansible_connection {connection!r} is not "
            f"supported; use one of {', '.join(CONNECTIONS)}"
        )
    python = merged.get("python") or merged.get("ansible_python_interpreter") or DEFAULT_PYTHON
    groups = tuple(sorted(walker.host_groups.get(name, {}), key=rank.__getitem__))
    return Host(
        name=name,
        address=str(merged.get("ansible_host", name)),
        port=int(merged.get("ansible_port", 22)),
        user=merged.get("ansible_user"),
        key_file=merged.get("ansible_ssh_private_key_file"),
        become=bool(merged.get("ansible_become", False)),
        become_user=merged.get("ansible_become_user"),
        connection=connection,
        python=str(python),
        workdir=str(merged.get("workdir", DEFAULT_WORKDIR)),
        model_path=_opt_str(merged.get("model_path")),
        nic=_opt_str(merged.get("nic")),
        groups=groups,
        container_runtime=_opt_str(merged.get("container_runtime")),
        container_image=_opt_str(merged.get("container_image")),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
