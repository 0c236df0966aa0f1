"""Inventory parsing: Ansible's structure and precedence, and errors that point at lines."""

from __future__ import annotations

import pytest

from toolkit.errors import InventoryError, YamlError
from toolkit.inventory import expand_host_pattern, parse_inventory

ISSUE_EXAMPLE = """\
all:
  vars: {model_path: /models/glm-5.1-w4a8, nic: enp23s0f3}
  children:
    prefill: {hosts: {10.9.1.11: {}, 10.9.1.12: {}}}
    decode:  {hosts: {10.9.2.11: {}, 10.9.2.12: {}}}
"""


def test_the_documented_example_parses_unchanged() -> None:
    inv = parse_inventory(ISSUE_EXAMPLE, "inv.yaml")
    assert [h.name for h in inv.group("prefill")] == ["10.9.1.11", "10.9.1.12"]
    assert [h.name for h in inv.group("decode")] == ["10.9.2.11", "10.9.2.12"]
    host = inv.hosts["10.9.2.12"]
    assert host.address == "10.9.2.12"
    assert host.model_path == "/models/glm-5.1-w4a8"
    assert host.nic == "enp23s0f3"
    assert host.python == "python3"
    assert host.port == 22


def test_precedence_all_then_group_then_host() -> None:
    inv = parse_inventory(
        """
all:
  vars: {nic: eth0, ansible_user: ops, python: /usr/bin/python3}
  children:
    prefill:
      vars: {nic: eth1}
      hosts:
        p1: {ansible_host: 10.0.0.1, ansible_port: 2222}
        p2: {ansible_host: 10.0.0.2, nic: eth9, ansible_become: true}
    decode:
      hosts:
        d1: {ansible_host: 10.0.0.3, ansible_ssh_private_key_file: ~/.ssh/a3}
""",
        "inv.yaml",
    )
    p1, p2, d1 = (inv.hosts[n] for n in ("p1", "p2", "d1"))
    assert (p1.nic, p2.nic, d1.nic) == ("eth1", "eth9", "eth0")
    assert (p1.address, p1.port, p1.user) == ("10.0.0.1", 2222, "ops")
    assert p2.become is True and p1.become is False
    assert d1.key_file == "~/.ssh/a3"
    assert d1.python == "/usr/bin/python3"


def test_nested_children_and_host_ranges() -> None:
    inv = parse_inventory(
        """
all:
  children:
    a3:
      vars: {model_path: /m}
      children:
        prefill: {hosts: {"node[01:02]": {}}}
        decode: {hosts: {"node[03:04]": {}}}
""",
        "inv.yaml",
    )
    assert [h.name for h in inv.group("prefill")] == ["node01", "node02"]
    assert all(h.model_path == "/m" for h in inv.hosts.values())
    assert expand_host_pattern("n[8:10]") == ["n8", "n9", "n10"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "all:\n  children:\n    prefill:\n      hosts:\n        p1: {ansible_hots: 1.2.3.4}\n",
            "inv.yaml:5: unknown variable 'ansible_hots' (did you mean 'ansible_host'?)",
        ),
        (
            "all:\n  childen:\n    prefill: {}\n",
            "inv.yaml:2: unknown key 'childen' in group 'all'",
        ),
        (
            "all:\n  hosts:\n    a: {ansible_port: twenty}\n",
            "inv.yaml:3: ansible_port must be int",
        ),
        (
            "all:\n  hosts: {a: {}}\n  vars: {ansible_connection: winrm}\n",
            "ansible_connection 'winrm' is not supported",
        ),
        ("all:\n  children:\n    router: {hosts: {a: {}, b: {}}}\n", "group 'router' has 2"),
        ("", "the inventory is empty"),
    ],
)
def test_errors_name_file_line_and_fix(text: str, expected: str) -> None:
    with pytest.raises(InventoryError) as err:
        parse_inventory(text, "inv.yaml")
    assert expected in str(err.value)


def test_yaml_syntax_error_gives_file_and_line() -> None:
    with pytest.raises(YamlError, match=r"^inv.yaml:3: YAML syntax error"):
        parse_inventory("all:\n  hosts:\n    a: {b: [}\n", "inv.yaml")


def test_duplicate_keys_are_errors_not_silently_last_wins() -> None:
    with pytest.raises(YamlError, match=r"inv.yaml:4: key 'p1' appears twice \(first at line 3\)"):
        parse_inventory("all:\n  hosts:\n    p1: {}\n    p1: {}\n", "inv.yaml")
