"""YAML loading that keeps line numbers, so every error can point at file and line.

PyYAML's composed node tree carries marks; `Located` keeps it next to the plain data and
answers "which line holds this key path?". Duplicate keys, which PyYAML silently resolves
to the last one, are reported as errors because they almost always hide a typo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import YamlError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Plain YAML data plus the node tree it came from."""

    path: str
    data: Any
    root: yaml.Node | None

    def line(self, keys: KeyPath) -> int | None:
        """1-based line of the deepest key reachable along `keys`."""
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for key in keys:
            found = _child(node, key)
            if found is None:
                break
            key_node, node = found
            best = key_node.start_mark.line + 1
        return best

    def where(self, keys: KeyPath) -> str:
        """`file:line` for a key path (just the file when the line is unknown)."""
        line = self.line(keys)
        return f"{self.path}:{line}" if line else self.path


def _child(node: yaml.Node | None, key: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node naming `key`, the value node) inside a mapping or sequence."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key], node.value[key]
    return None


def _check_duplicates(node: yaml.Node | None, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise YamlError(
                    f"{path}:{line}: key {key_node.value!r} appears twice "
                    f"(first at line {seen[key_node.value]}); keep one"
                )
            seen[key_node.value] = line
            _check_duplicates(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)


def parse_yaml(text: str, path: str) -> Located:
    """Parse YAML text; syntax errors name the file and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"{path}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{path}: YAML error: {exc}") from None
    _check_duplicates(root, path)
    return Located(path=path, data=data, root=root)


def load_yaml(path: Path | str) -> Located:
    """Read and parse a YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlError(f"{p}: no such file") from None
    except OSError as exc:
        raise YamlError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_yaml(text, str(p))
