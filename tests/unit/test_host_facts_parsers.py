"""The one /proc/net/tcp parser and the one NIC detection (toolkit/host/facts.py), from
fixtures: the agent's modules at `up` and the check's rules read hosts through them.

Why: each existed two or three times and the copies could disagree on what holds a port
or which interface carries a node's address.
"""

from __future__ import annotations

from toolkit.host.facts import detect_nic, parse_proc_net_tcp, port_holders
from toolkit.preflight.check_facts import HostFacts
from toolkit.preflight.check_rules import holding_interface

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0B01090A:2326 0C01090A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A
"""
IFACES = {"lo": ["127.0.0.1/8", "::1/128"], "eth0": ["10.9.1.11/24", "not-a-cidr"]}


def test_proc_net_tcp_addresses_ports_and_states() -> None:
    assert parse_proc_net_tcp(TCP, v6=False) == [
        ("127.0.0.1", 8000, "0A"),
        ("10.9.1.11", 8998, "01"),
    ]
    assert parse_proc_net_tcp(TCP6, v6=True) == [("::1", 8001, "0A"), ("::", 5000, "0A")]


def test_a_holder_clashes_on_its_address_or_a_wildcard() -> None:
    listening = {8000: ["127.0.0.1"], 5000: ["::"]}
    assert port_holders(8000, "127.0.0.1", listening) == ["127.0.0.1"]
    assert port_holders(8000, "10.9.1.11", listening) == []
    assert port_holders(8000, "0.0.0.0", listening) == ["127.0.0.1"]
    assert port_holders(5000, "10.9.1.11", listening) == ["::"]


def test_nic_detection_holds_then_covers_and_skips_unparsable_addresses() -> None:
    assert detect_nic("10.9.1.11", IFACES) == ("eth0", "holds 10.9.1.11")
    assert detect_nic("127.0.0.2", IFACES) == ("lo", "covers 127.0.0.2 (in 127.0.0.1/8)")
    assert detect_nic("10.9.2.11", IFACES) is None
    assert detect_nic("prefill-1.example", IFACES) is None


def test_the_check_detects_from_the_probe_as_up_does_on_the_host() -> None:
    probe = {
        "interfaces": {
            "source": "ip",
            "interfaces": [
                {"name": "lo", "ipv4": ["127.0.0.1/8"], "ipv6": ["::1/128"]},
                {"name": "eth0", "ipv4": ["10.9.1.11/24"], "ipv6": []},
            ],
        }
    }
    facts = HostFacts("h", probe=probe)
    assert holding_interface(facts, "10.9.1.11") == detect_nic("10.9.1.11", IFACES)
    assert holding_interface(facts, "127.0.0.2")[0] == "lo"
    assert holding_interface(facts, "a-name") == (None, "")
