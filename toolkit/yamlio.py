"""YAML loading that keeps line numbers and survives hostile files.

PyYAML's composed node tree carries marks; `Located` keeps it next to the plain data and
answers "which line holds this key path?". Duplicate keys, which PyYAML silently resolves
to the last one, are reported as errors because they almost always hide a typo.

Inventories and profiles are small, hand-written files, so anything else is refused early
with one error naming the file, and every step is linear in the file's size:
- more than `MAX_BYTES`, or bytes that are not UTF-8 text (a binary file);
- aliases that expand to more than `MAX_ALIAS_EXPANSION` extra values (an "alias bomb"
  would otherwise make every later walk over the data exponential), or that contain
  themselves, or nesting deeper than `MAX_DEPTH`.
The node graph is walked once, each node once, never following an alias a second time.
The file is parsed once, with libyaml when PyYAML has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import YamlError

KeyPath = tuple[str | int, ...]
MAX_BYTES = 4 * 1024 * 1024
MAX_ALIAS_EXPANSION = 100_000
MAX_DEPTH = 100
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLimitError(YamlError):
    """Valid YAML that toolkit refuses to expand: alias cycles and bombs, deep nesting."""


@dataclass(frozen=True)
class Located:
    """Plain YAML data plus the node tree it came from."""

    path: str
    data: Any
    root: yaml.Node | None
    # Mapping node id → {key text: (key node, value node)}, built on first use.
    _index: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def line(self, keys: KeyPath) -> int | None:
        """1-based line of the deepest key reachable along `keys`."""
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for key in keys:
            found = self._child(node, key)
            if found is None:
                break
            key_node, node = found
            best = key_node.start_mark.line + 1
        return best

    def where(self, keys: KeyPath) -> str:
        """`file:line` for a key path (just the file when the line is unknown)."""
        line = self.line(keys)
        return f"{self.path}:{line}" if line else self.path

    def _child(self, node: yaml.Node | None, key: str | int) -> tuple[yaml.Node, yaml.Node] | None:
        """(the node naming `key`, the value node) inside a mapping or sequence."""
        if isinstance(node, yaml.MappingNode):
            index = self._index.get(id(node))
            if index is None:
                index = {}
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode):
                        index.setdefault(key_node.value, (key_node, value_node))
                self._index[id(node)] = index
            return index.get(str(key))
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            return node.value[key], node.value[key]
        return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_duplicates(node: yaml.MappingNode, path: str) -> None:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            raise YamlError(
                f"{path}:{line}: key {key_node.value!r} appears twice "
                f"(first at line {seen[key_node.value]}); keep one"
            )
        seen[key_node.value] = line


def check_graph(root: yaml.Node | None, path: str) -> None:
    """Duplicate keys, depth, alias cycles and alias expansion, visiting each node once.

    `expanded` counts the values the data will hold once aliases are resolved (what every
    later walk over it costs); `distinct` counts the nodes written in the file.
    """
    if root is None:
        return
    state: dict[int, int] = {}  # node id → 1 on the current path, 2 done
    expanded: dict[int, int] = {}
    # (node, its children, how many of them are visited)
    stack: list[tuple[yaml.Node, list[yaml.Node], list[int]]] = []

    def enter(node: yaml.Node) -> None:
        state[id(node)] = 1
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path)
        stack.append((node, _children(node), [0]))

    enter(root)
    while stack:
        node, children, done = stack[-1]
        if done[0] < len(children):
            child = children[done[0]]
            done[0] += 1
            seen = state.get(id(child))
            if seen == 1:
                line = child.start_mark.line + 1
                raise YamlLimitError(
                    f"{path}:{line}: a YAML alias refers to a node that contains it"
                )
            if seen is None:
                if len(stack) >= MAX_DEPTH:
                    line = child.start_mark.line + 1
                    raise YamlLimitError(f"{path}:{line}: nested more than {MAX_DEPTH} levels deep")
                enter(child)
            continue
        stack.pop()
        state[id(node)] = 2
        total = 1 + sum(expanded[id(c)] for c in children)
        expanded[id(node)] = total
        if total - len(expanded) > MAX_ALIAS_EXPANSION:
            line = node.start_mark.line + 1
            raise YamlLimitError(
                f"{path}:{line}: YAML aliases here expand to more than "
                f"{MAX_ALIAS_EXPANSION:,} values; write the values out or use fewer aliases"
            )


def _syntax_error(exc: yaml.YAMLError, path: str) -> YamlError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return YamlError(f"{path}{line}: YAML syntax error: {problem}")
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return YamlError(
            f"{path}: character 0x{char:02x} at offset {exc.position} is not allowed in "
            "YAML; is this a binary file?"
        )
    return YamlError(f"{path}: YAML error: {exc}")


def parse_yaml(text: str, path: str) -> Located:
    """Parse YAML text; syntax errors name the file and line."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        check_graph(root, path)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, path) from None
    except RecursionError:
        raise YamlLimitError(f"{path}: nested too deeply to read") from None
    finally:
        loader.dispose()
    return Located(path=path, data=data, root=root)


def parse_value(text: str, where: str) -> Any:
    """One YAML value typed on the command line (`--set key=VALUE`), with the same guards."""
    return parse_yaml(text, where).data


def decode(raw: bytes, path: str) -> str:
    """UTF-8 text (a leading BOM dropped), or an error naming the file and the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "is this a binary file? Save it as UTF-8"
        ) from None


def load_yaml(path: Path | str) -> Located:
    """Read and parse a YAML file of at most MAX_BYTES."""
    p = Path(path)
    try:
        with p.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise YamlError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise YamlError(f"{p}: is a directory, not a YAML file") from None
    except OSError as exc:
        raise YamlError(f"{p}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise YamlError(
            f"{p}: larger than {MAX_BYTES // (1024 * 1024)} MiB; inventories and profiles are "
            "small text files. Is this the right file?"
        )
    return parse_yaml(decode(raw, str(p)), str(p))
