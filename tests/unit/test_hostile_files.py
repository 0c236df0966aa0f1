"""Hostile input files end at once with one `error:` line naming the file.

Before issue 8: a binary inventory was an "internal error", a YAML alias bomb spun for
minutes in the duplicate-key walk, a 10 MB inventory took 300 s and 1 GB. The CLI runs as a
user runs it (a subprocess); the loader's limits are also tested directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.errors import YamlError
from toolkit.yamlio import MAX_ALIAS_EXPANSION, MAX_BYTES, check_graph, load_yaml, parse_yaml

PROFILE = "a3-1p1d-64k"


def _bomb(levels: int = 9) -> str:
    """Each level lists the previous one nine times: 9**levels values from ~40 lines."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[bytes, str]] = {
    "binary": (bytes(range(256)) * 8, "not UTF-8 text (byte 0x80 at offset 128)"),
    "nul bytes": (b"all:\n  hosts:\n    a\x00b: {}\n", "character 0x00 at offset"),
    "alias bomb": (_bomb().encode(), "aliases here expand to more than"),
    "alias cycle": (b"all: &a\n  children: *a\n", "alias refers to a node that contains it"),
    "deep nesting": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nest"),
    "too large": (b"# padding\n" * (MAX_BYTES // 10 + 1), "larger than 4 MiB"),
    "host range": (b"all:\n  hosts:\n    n[0:999999999]: {}\n", "names 1,000,000,000 hosts"),
    "duplicate key": (b"all:\n  hosts: {}\n  hosts: {}\n", "key 'hosts' appears twice"),
}


def toolkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        timeout=60,
    )


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inventory_is_one_error_line_naming_the_file(tmp_path: Path, case: str) -> None:
    assert HOSTILE
    content, message = HOSTILE[case]
    inventory = tmp_path / "inv.yaml"
    inventory.write_bytes(content)
    result = toolkit("plan", "-p", PROFILE, "-i", str(inventory), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {inventory}"), result.stderr
    assert message in lines[0]


def test_hostile_profile_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(f"extends: {PROFILE}\n" + _bomb())
    result = toolkit("profiles", "bomb", "--profiles-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'bomb.yaml'}:"), result.stderr
    assert "aliases here expand" in result.stderr


def test_alias_bomb_in_set_is_refused(tmp_path: Path) -> None:
    value = "{" + _bomb().strip().replace("\n", ", ") + "}"
    result = toolkit("profiles", PROFILE, "--set", f"meta.title={value}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --set meta.title:"), result.stderr


def test_markup_in_a_message_is_printed_as_text(tmp_path: Path) -> None:
    """Rich markup in a host name must not break (or style) the error line."""
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("all:\n  hosts:\n    '[/]x y': {}\n")
    result = toolkit("plan", "-p", PROFILE, "-i", str(inventory), cwd=tmp_path)
    assert result.returncode == 2 and "host name '[/]x y' is not valid" in result.stderr


def test_aliases_that_expand_modestly_still_load() -> None:
    text = "base: &b {a: 1, b: [1, 2, 3]}\n" + "".join(f"k{i}: *b\n" for i in range(1000))
    doc = parse_yaml(text, "ok.yaml")
    assert doc.data["k999"] == {"a": 1, "b": [1, 2, 3]}


def test_expansion_limit_counts_values_not_aliases() -> None:
    # One list aliased MAX/10 + 1 times expands by more than the limit.
    width = MAX_ALIAS_EXPANSION // 10 + 1
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*a"] * width) + "]\n"
    with pytest.raises(YamlError, match="expand"):
        parse_yaml(text, "x.yaml")


def test_graph_walk_visits_a_shared_node_once() -> None:
    """The walk is linear in the file: 30 levels of doubling (2**30 values) are refused
    without being walked."""
    lines = ["l0: &l0 [x, x]"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 30)]
    import yaml

    root = yaml.compose("\n".join(lines), Loader=yaml.SafeLoader)
    with pytest.raises(YamlError, match="expand"):
        check_graph(root, "x.yaml")


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="is a directory"):
        load_yaml(tmp_path)
    with pytest.raises(YamlError, match="no such file"):
        load_yaml(tmp_path / "nope.yaml")
