"""Every value that reaches a shell: validated where it enters, quoted or escaped where it is
written. Each test feeds one injection that ran a command before (issue 8) and checks that it
is refused with an error naming the file and key, or that the generated script, run by bash,
does not execute it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from toolkit import inventory as inventory_module
from toolkit import shell
from toolkit.errors import InventoryError, ProfileError
from toolkit.inventory import parse_inventory
from toolkit.planner import build_plan
from toolkit.profiles import load_profile
from toolkit.render.scripts import ScriptOptions, node_script, rehearsal_prepare_script

GOOD = """\
all:
  vars: {model_path: /models/m, nic: eth0}
  children:
    prefill: {hosts: {p1: {}, p2: {}}}
    decode: {hosts: {d1: {}, d2: {}}}
"""
PROFILE = "a3-1p1d-64k"


def _inventory(host_line: str, vars_line: str = "") -> str:
    return (
        "all:\n"
        "  vars: {model_path: /models/m}\n"
        "  children:\n"
        "    prefill:\n"
        "      hosts:\n"
        f"        {host_line}\n"
        f"{vars_line}"
        "    decode: {hosts: {d1: {}}}\n"
    )


HOSTILE_INVENTORIES = [
    # A newline in a host name used to end the launch script's header comment.
    ('"p1\\ntouch /tmp/pwned": {}', "", "host name 'p1\\ntouch /tmp/pwned' is not valid"),
    ('"-oProxyCommand=touch x": {}', "", "host name '-oProxyCommand=touch x' is not valid"),
    ("p1: {ansible_host: '-oProxyCommand=id'}", "", "ansible_host '-oProxyCommand=id'"),
    ("p1: {ansible_user: 'root;id'}", "", "user name 'root;id' is not valid"),
    ("p1: {nic: 'eth0;id'}", "", "network interface name 'eth0;id' is not valid"),
    ('p1: {workdir: "/tmp/w\\nid"}', "", "workdir '/tmp/w\\nid' contains the control"),
    ('"n[0:99999999]": {}', "", "names 100,000,000 hosts; at most 10,000"),
]


@pytest.mark.parametrize(("host_line", "vars_line", "message"), HOSTILE_INVENTORIES)
def test_hostile_inventory_values_are_refused_with_file_and_line(
    host_line: str, vars_line: str, message: str
) -> None:
    assert HOSTILE_INVENTORIES
    with pytest.raises(InventoryError) as err:
        parse_inventory(_inventory(host_line, vars_line), "inv.yaml")
    assert str(err.value).startswith("inv.yaml:6: "), err.value
    assert message in str(err.value)


def test_hostile_group_name_is_refused() -> None:
    text = GOOD + '    "x;id": {hosts: {p3: {}}}\n'
    with pytest.raises(InventoryError, match=r"inv.yaml:6: group name 'x;id' is not valid"):
        parse_inventory(text, "inv.yaml")


def test_a_large_group_listed_under_many_parents_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ansible semantics let a few lines (a big group as the child of many groups) cost
    hosts × groups work; the walk stops at a bound (lowered here to keep the test fast)."""
    monkeypatch.setattr(inventory_module, "MAX_MEMBERSHIPS", 5_000)
    hosts = ", ".join(f"h{i}: {{}}" for i in range(200))
    parents = "".join(f"    g{i}: {{children: {{big: }}}}\n" for i in range(30))
    text = GOOD + f"    big: {{hosts: {{{hosts}}}}}\n" + parents
    with pytest.raises(InventoryError, match="more than 5,000 host memberships"):
        parse_inventory(text, "inv.yaml")
    few = "".join(parents.splitlines(keepends=True)[:3])
    assert len(parse_inventory(GOOD + few, "inv.yaml").hosts) == 4


def _profile_dir(tmp_path: Path, body: str) -> Path:
    (tmp_path / "mine.yaml").write_text(f"extends: {PROFILE}\n{body}")
    return tmp_path


@pytest.mark.parametrize(
    "body",
    [
        'env:\n  "B;touch /tmp/x;C": 2\n',
        "unset_env: ['A B']\n",
        "nic_env: ['$(id)']\n",
        "roles:\n  decode:\n    env:\n      '1BAD': x\n",
    ],
)
def test_env_names_from_a_profile_are_validated(tmp_path: Path, body: str) -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("mine", extra_dirs=[_profile_dir(tmp_path, body)])
    text = str(err.value)
    assert f"{tmp_path / 'mine.yaml'}:" in text and "environment variable name" in text
    assert "letters, digits and _" in text


def test_env_names_from_set_are_validated_and_blamed_on_the_flag() -> None:
    item = "env.B;touch /tmp/x;C=2"
    with pytest.raises(ProfileError) as err:
        load_profile(PROFILE, [item])
    assert f"--set {item}: env.B;touch /tmp/x;C: environment variable name" in str(err.value)


def test_profile_file_names_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad\nname.yaml"
    path.write_text(f"extends: {PROFILE}\n")
    with pytest.raises(ProfileError, match="profile name 'bad\\\\nname' is not valid"):
        load_profile(str(path))


def _plan():
    return build_plan(parse_inventory(GOOD, "inv.yaml"), load_profile(PROFILE))


def _run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = cwd / "script.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], cwd=cwd, capture_output=True, text=True, timeout=30)


def test_a_newline_in_a_planned_host_stays_inside_the_comment(tmp_path: Path) -> None:
    """A run record is read back from disk: the renderer must not trust its host names."""
    plan = _plan()
    marker = tmp_path / "pwned"
    hostile = f"\ntouch {marker}\n"
    node = replace(
        plan.nodes[0],
        host=f"p1{hostile}",
        address=f"1.2.3.4{hostile}",
        source=[],
        nic_env=["TOOLKIT_TEST_NIC"],  # puts the address into a comment as well
    )
    options = ScriptOptions(include_tuning=False, argv=("true",), run_id=f"r{hostile}")
    script = node_script(plan, node, options)
    assert (
        script.splitlines()[1].startswith("# prefill0.0") and "\\x0atouch" in script.splitlines()[1]
    )
    comments = [line for line in script.splitlines() if "carries" in line or "Generated" in line]
    assert len(comments) == 2 and all(c.startswith("# ") and "\\x0a" in c for c in comments)
    result = _run_script(script, tmp_path)
    assert not marker.exists(), script
    assert "no interface holds" in result.stderr


def test_an_env_name_that_bypassed_validation_cannot_be_rendered() -> None:
    plan = _plan()
    node = replace(plan.nodes[0], env={"B;touch /tmp/x;C": "2"})
    with pytest.raises(ValueError, match="environment variable name"):
        node_script(plan, node)


def test_env_values_and_argv_are_single_words(tmp_path: Path) -> None:
    plan = _plan()
    marker = tmp_path / "pwned"
    node = replace(
        plan.nodes[0],
        env={"SAFE": f"$(touch {marker})", "OTHER": f"'; touch {marker}; '"},
        source=[],
        nic_env=[],
    )
    argv = ("printf", "%s|", f"$(touch {marker})", f"`touch {marker}`", "a b")
    options = ScriptOptions(include_tuning=False, argv=argv)
    result = _run_script(node_script(plan, node, options), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"$(touch {marker})|`touch {marker}`|a b|"
    assert not marker.exists()


def test_rehearsal_prepare_script_quotes_the_workdir(tmp_path: Path) -> None:
    """`prepare.sh` wrote `cd {base}` unquoted: a workdir with `;` ran a command."""
    (tmp_path / "w").mkdir()  # so the unquoted `cd .../w;touch pwned;true` would succeed
    base = tmp_path / "w;touch pwned;true"
    base.mkdir()
    result = _run_script(rehearsal_prepare_script("echo", str(base)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("pwned"))


def test_shell_comment_escapes_every_line_break() -> None:
    for breaker in ("\n", "\r", "\x0b", "\x0c", "\u2028", "\x85"):
        text = shell.comment(f"a{breaker}b")
        assert breaker not in text and text.startswith("a\\x") and text.endswith("b")


@pytest.mark.parametrize("command", ["status", "logs", "down", "bench"])
def test_run_ids_are_validated_before_use(tmp_path: Path, command: str) -> None:
    """A run id becomes a directory on every host (`runs/<id>`): `../..` must not."""
    result = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", command, "--run", "../../etc"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "run id '../../etc' is not valid" in result.stderr, result.stderr
