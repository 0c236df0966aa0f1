"""`toolkit check --collective` over real SSH: gloo all-reduces between namespace hosts.

Why: the collective check exists to name, before a long weight load, the node whose
interface is down, whose collective port is firewalled, or whose `nic` is wrong. Each
fault is made for real on one host (a link set down, an iptables rule in the host's
namespace, a wrong name in the inventory) and must be named by host, device and interface,
while the other instance still passes and no worker is left running.

Hosts tkt-h1 tkt-h2 are the prefill instance, tkt-h3 tkt-h4 the decode instance of
a3-1p1d-64k, checked as a rehearsal (gloo, one CPU worker per node). The interface tests
give every host a second interface, `coll0` (a veth holding an extra address), as the
inventory's `nic`, so that taking it down leaves SSH on eth0 working.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from netns import TestCluster, TestHost
from toolkit_cli import HOST_PYTHON

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROFILE = "a3-1p1d-64k"
NIC, PEER = "coll0", "coll0p"
# Short deadlines: a missing rank is named after this many seconds.
FAST = ["--set", "collective.join_timeout_s=6", "--set", "collective.op_timeout_s=30"]


@pytest.fixture
def hosts(ssh_cluster: TestCluster) -> list[TestHost]:
    assert len(ssh_cluster.hosts) >= 4, "the collective tests need 4 namespace hosts"
    return ssh_cluster.hosts[:4]


@pytest.fixture
def coll0(hosts: list[TestHost]) -> Iterator[dict[str, str]]:
    """A `coll0` interface up on every host, with an address of its own; removed after."""
    addresses = {}
    for i, host in enumerate(hosts):
        address = host.address.rsplit(".", 1)[0] + f".{150 + i}"
        # A veth pair inside the namespace (CI kernels may lack the dummy driver).
        host.run(["ip", "link", "add", NIC, "type", "veth", "peer", "name", PEER], check=False)
        host.run(["ip", "addr", "replace", f"{address}/32", "dev", NIC])
        host.run(["ip", "link", "set", PEER, "up"])
        host.run(["ip", "link", "set", NIC, "up"])
        addresses[host.name] = address
    yield addresses
    for host in hosts:
        host.run(["ip", "link", "del", NIC], check=False)


def write_inventory(
    cluster: TestCluster,
    hosts: list[TestHost],
    workdirs: dict[str, Path],
    tmp: Path,
    nics: dict,
    **extra: object,
) -> Path:
    path = cluster.write_inventory(
        tmp / "inventory.yaml",
        {"prefill": hosts[:2], "decode": hosts[2:4]},
        # A rehearsal loads no weights; the path is only planned.
        {"python": HOST_PYTHON, "model_path": str(tmp / "model"), **extra},
        workdirs=workdirs,
    )
    doc = yaml.safe_load(path.read_text())
    for group in doc["all"]["children"].values():
        for name, host_vars in group["hosts"].items():
            if nics.get(name):
                host_vars["nic"] = nics[name]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def check(inventory: Path, env: dict[str, str], *args: str) -> dict:
    argv = [sys.executable, "-m", "toolkit.cli", "check", "--rehearse", "--collective"]
    argv += ["--format", "json", "-p", PROFILE, "-i", str(inventory), *args]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    print(json.dumps(report["collective"], indent=1))
    return report


def cells(report: dict) -> dict[str, dict]:
    return {f["host"]: f for f in report["findings"] if f["check"] == "collective"}


def no_workers_left(workdirs: dict[str, Path]) -> None:
    """Every worker the check started is gone (the PID space is shared with the hosts)."""
    for workdir in workdirs.values():
        pattern = f"{workdir}/.toolkit-collective"
        assert not command_lines(pattern), f"processes left running under {pattern}"
        assert not list(Path(pattern).glob("*.py")), "the uploaded worker was not removed"


def test_clean_hosts_pass_with_figures(
    ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path
) -> None:
    # A non-root login with become: the workers run as root, as `up` starts the engine.
    user = ssh_cluster.create_sudo_user("collective")
    entry = pwd.getpwnam(user)
    for path in host_workdirs.values():
        os.chown(path, entry.pw_uid, entry.pw_gid)
    become = {"ansible_user": user, "ansible_become": True}
    inventory = write_inventory(ssh_cluster, hosts, host_workdirs, tmp_path, {}, **become)
    report = check(inventory, ssh_env, "--set", "collective.min_busbw_gbps=0.000001")
    found = cells(report)
    assert {h: f["status"] for h, f in found.items()} == {h.name: "ok" for h in hosts}
    assert [s["instance"] for s in report["collective"]] == ["prefill0", "decode0"]
    for summary in report["collective"]:
        assert summary["ok"] and summary["world"] == 2 and summary["backend"] == "gloo"
        assert all(row["busbw_gbps"] > 0 for row in summary["sizes"])
        assert summary["latency_us"] > 0 and summary["all_gather"]["busbw_gbps"] > 0
        # The detected interface (eth0 holds each host's address) was the one used.
        assert summary["slowest"]["label"].endswith("cpu0 via eth0)")
    assert "≥ min 1e-06 GB/s" in found["tkt-h1"]["detail"]
    assert any("all-reduce busbw GB/s" in note for note in found["tkt-h1"]["notes"])
    for host in hosts:  # made through sudo, so owned by root
        assert (host_workdirs[host.name] / ".toolkit-collective").stat().st_uid == 0
    no_workers_left(host_workdirs)


def test_interface_down_on_one_host_is_named(
    ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path, coll0
) -> None:
    nics = {h.name: NIC for h in hosts}
    inventory = write_inventory(ssh_cluster, hosts, host_workdirs, tmp_path, nics)
    hosts[1].run(["ip", "link", "set", NIC, "down"])
    report = check(inventory, ssh_env, *FAST)
    found = cells(report)
    h2 = found["tkt-h2"]
    assert h2["status"] == "failed" and h2["summary"] == "interface down"
    assert "rank 1 (tkt-h2 cpu0 via coll0): interface coll0 is down" in h2["detail"]
    assert "ip link set coll0 up" in h2["fix"]
    # The leader waited for it and names it; the decode instance is unaffected.
    assert "not joined: rank 1 (tkt-h2 cpu0 via coll0)" in found["tkt-h1"]["detail"]
    assert found["tkt-h3"]["status"] == found["tkt-h4"]["status"] == "ok"
    no_workers_left(host_workdirs)


def test_firewalled_rendezvous_port_is_named(
    ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path
) -> None:
    inventory = write_inventory(ssh_cluster, hosts, host_workdirs, tmp_path, {})
    # The rendezvous is the first free port after prefill's dist-init port (5000).
    rule = ["INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", "5001:5032", "-j", "DROP"]
    hosts[0].run(["iptables", "-w", "-I", *rule])
    try:
        report = check(inventory, ssh_env, *FAST)
    finally:
        hosts[0].run(["iptables", "-w", "-D", *rule])
    found = cells(report)
    h2 = found["tkt-h2"]
    assert h2["status"] == "failed" and h2["summary"] == "no rendezvous"
    want = f"rank 1 (tkt-h2 cpu0 via eth0): cannot reach the rendezvous at {hosts[0].address}:"
    assert want in h2["detail"]
    assert "within 6 s" in h2["detail"] and "open TCP 5001-5032 on tkt-h1" in h2["fix"]
    assert "not joined: rank 1 (tkt-h2 cpu0 via eth0)" in found["tkt-h1"]["detail"]
    assert found["tkt-h3"]["status"] == found["tkt-h4"]["status"] == "ok"
    no_workers_left(host_workdirs)


def test_workers_die_with_the_controller(
    ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path
) -> None:
    """SIGKILL the CLI while the ranks wait at a firewalled rendezvous: no cleanup code of
    the controller runs, yet every worker goes (their launchers' heartbeat finds the SSH
    channel closed)."""
    inventory = write_inventory(ssh_cluster, hosts, host_workdirs, tmp_path, {})
    rule = ["INPUT", "!", "-i", "lo", "-p", "tcp", "--dport", "5001:5032", "-j", "DROP"]
    hosts[0].run(["iptables", "-w", "-I", *rule])
    argv = [sys.executable, "-m", "toolkit.cli", "check", "--rehearse", "--collective"]
    argv += ["-p", PROFILE, "-i", str(inventory), "--set", "collective.join_timeout_s=120"]
    cli = subprocess.Popen(argv, cwd=REPO, env=ssh_env, stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(workers(host_workdirs)) >= 2, 90), "no workers started"
        cli.kill()
        cli.wait(10)
        assert wait_for(lambda: not workers(host_workdirs), 30), workers(host_workdirs)
    finally:
        cli.kill()
        hosts[0].run(["iptables", "-w", "-D", *rule])
    no_workers_left(host_workdirs)


def workers(workdirs: dict[str, Path]) -> list[str]:
    """Worker processes (not launchers) of this test, by their uploaded file's path."""
    found = []
    for workdir in workdirs.values():
        found += command_lines(f"{workdir}/.toolkit-collective/", word="worker")
    return found


def command_lines(marker: str, word: str | None = None) -> list[str]:
    """Live processes whose argv holds `marker` (and the argument `word`), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [
                a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue  # exited meanwhile
        if any(marker in a for a in argv) and (word is None or word in argv):
            found.append(" ".join(argv))
    return found


def wait_for(condition, seconds: float) -> bool:
    """Poll `condition` until it holds or `seconds` pass (a bound, not a measurement)."""
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        if condition():
            return True
        time.sleep(0.3)
    return condition()


def test_wrong_nic_in_the_inventory_is_named(
    ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path
) -> None:
    inventory = write_inventory(ssh_cluster, hosts, host_workdirs, tmp_path, {"tkt-h4": "eth9"})
    report = check(inventory, ssh_env, *FAST)
    found = cells(report)
    h4 = found["tkt-h4"]
    assert h4["status"] == "failed" and h4["summary"] == "no interface"
    assert "rank 1 (tkt-h4 cpu0 via eth9): interface eth9 does not exist" in h4["detail"]
    assert "set nic for tkt-h4" in h4["fix"]
    assert "not joined: rank 1 (tkt-h4 cpu0 via eth9)" in found["tkt-h3"]["detail"]
    assert found["tkt-h1"]["status"] == found["tkt-h2"]["status"] == "ok"
    nic = next(f for f in report["findings"] if (f["host"], f["check"]) == ("tkt-h4", "nic"))
    assert nic["status"] == "failed"  # the static row agrees
    no_workers_left(host_workdirs)
