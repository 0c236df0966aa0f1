"""Tests of the namespace-host infrastructure itself, with Paramiko and Fabric directly.

Why: every CLI integration test trusts these hosts to behave like machines on a LAN (own
address, own host key, a firewall, a dead host) and to vanish after the run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from fabric import ThreadingGroup
from netns import NETNS_ETC, TestCluster, TestHost, sweep_stale

pytestmark = pytest.mark.integration


def _client(cluster: TestCluster, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_system_host_keys(str(known_hosts or cluster.known_hosts))
    return client


def _connect(
    cluster: TestCluster, host: TestHost, user: str = "root", **kw: object
) -> paramiko.SSHClient:
    client = kw.pop("client", None) or _client(cluster)
    client.connect(
        host.address,
        port=host.port,
        username=user,
        key_filename=str(cluster.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        **kw,
    )
    return client


def _exec(client: paramiko.SSHClient, cmd: str) -> tuple[int, str, str]:
    _, out, err = client.exec_command(cmd, timeout=10)
    rc = out.channel.recv_exit_status()
    return rc, out.read().decode(), err.read().decode()


def _tcp_from(host: TestHost, address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connect from `host`'s namespace to address:port succeeds."""
    code = (
        "import socket,sys\n"
        f"try: socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
        "except OSError as e: sys.exit(f'{type(e).__name__}: {e}')"
    )
    return host.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.fixture
def hosts(ssh_cluster: TestCluster) -> list[TestHost]:
    assert len(ssh_cluster.hosts) >= 2, "need at least two hosts"
    return ssh_cluster.hosts


def test_every_host_accepts_ssh_with_host_key_checking(
    ssh_cluster: TestCluster, hosts: list[TestHost]
) -> None:
    for host in hosts:
        with _connect(ssh_cluster, host) as client:
            rc, out, _ = _exec(client, "hostname; hostname -I; id -u; getent hosts tkt-h1")
        assert rc == 0
        name, addresses, uid, resolved = out.splitlines()
        assert (name, addresses.split(), uid) == (host.name, [host.address], "0")
        assert resolved.split() == [hosts[0].address, "tkt-h1"]


def test_host_key_checking_is_really_on(ssh_cluster: TestCluster, tmp_path: Path) -> None:
    first, second = ssh_cluster.hosts[:2]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(ssh_cluster, first, client=_client(ssh_cluster, empty))
    # Each host has its own key: first's key registered for second's address is a mismatch.
    lines = ssh_cluster.known_hosts.read_text().splitlines()
    first_key = next(ln for ln in lines if ln.split()[0] == first.address).split(None, 1)[1]
    swapped = tmp_path / "swapped"
    swapped.write_text(f"{second.address} {first_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _connect(ssh_cluster, second, client=_client(ssh_cluster, swapped))


def test_threading_group_runs_on_all_hosts(ssh_cluster: TestCluster, hosts: list[TestHost]) -> None:
    group = ThreadingGroup(
        *[h.address for h in hosts],
        user="root",
        connect_kwargs={
            "key_filename": str(ssh_cluster.client_key),
            "look_for_keys": False,
            "allow_agent": False,
        },
    )
    for conn in group:  # Fabric auto-adds unknown keys by default; insist on the real ones
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_system_host_keys(str(ssh_cluster.known_hosts))
    try:
        started = time.monotonic()
        first = group.run("hostname", hide=True, in_stream=False)
        connect = time.monotonic() - started
        started = time.monotonic()
        group.run("true", hide=True, in_stream=False)
        again = time.monotonic() - started
    finally:
        group.close()
    by_address = {c.host: r.stdout.strip() for c, r in first.items()}
    assert by_address == {h.address: h.name for h in hosts}
    print(f"\n{len(hosts)} hosts: connect+run {connect:.2f}s, run('true') {again:.2f}s")


def test_host_namespace_holds_its_address(hosts: list[TestHost]) -> None:
    for host in hosts:
        out = host.run("ip -4 -o addr show dev eth0").stdout
        assert f"inet {host.address}/24" in out
        assert host.workdir.is_dir()


def test_openssh_client_and_per_host_hostname(ssh_cluster: TestCluster) -> None:
    host = ssh_cluster.hosts[-1]
    proc = subprocess.run(
        ["ssh", *ssh_cluster.ssh_options(), f"root@{host.address}", "hostname"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, host.name), proc.stderr


def test_hosts_reach_each_other_and_listen_conflicts(hosts: list[TestHost]) -> None:
    a, b = hosts[0], hosts[1]
    assert not _tcp_from(a, b.address, 18999)
    with b.listen(18999):
        assert _tcp_from(a, b.address, 18999)
        # Held port: a second bind on the host fails like a real port conflict.
        code = f"import socket; socket.socket().bind(({b.address!r}, 18999))"
        bind = b.run([sys.executable, "-c", code], check=False)
        assert bind.returncode != 0 and "Address already in use" in bind.stderr


def test_block_port_and_unblock(ssh_cluster: TestCluster, hosts: list[TestHost]) -> None:
    a, b = hosts[0], hosts[1]
    with b.listen(18998):
        b.block_port(18998, mode="reject")
        try:
            assert not _tcp_from(a, b.address, 18998)
            assert _tcp_from(b, b.address, 18998), "a host still reaches its own port"
            b.block_port(18998)  # "drop": a timeout, checked from the control machine
            with pytest.raises(OSError):
                socket.create_connection((b.address, 18998), timeout=0.5)
        finally:
            b.unblock_port(18998)
        assert _tcp_from(a, b.address, 18998)
        assert "18998" not in b.run("iptables -S INPUT").stdout


def test_unreachable_and_refusing_hosts_fail_fast(ssh_cluster: TestCluster) -> None:
    down = ssh_cluster.unreachable_host()
    started = time.monotonic()
    with pytest.raises((paramiko.ssh_exception.NoValidConnectionsError, OSError)):
        _connect(ssh_cluster, down)
    assert time.monotonic() - started < 4
    no_sshd = ssh_cluster.add_host(start_sshd=False)
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        _connect(ssh_cluster, no_sshd)


def test_sudo_user_logs_in_and_becomes_root(ssh_cluster: TestCluster) -> None:
    user = ssh_cluster.create_sudo_user()
    with _connect(ssh_cluster, ssh_cluster.hosts[0], user=user) as client:
        rc, out, err = _exec(client, "id -un; sudo -n id -u")
    assert (rc, out.split(), err) == (0, [user, "0"], "")


def test_inventory_and_workdirs(
    ssh_cluster: TestCluster, hosts: list[TestHost], host_workdirs: dict[str, Path], tmp_path
) -> None:
    assert set(host_workdirs) == {h.name for h in hosts}
    for host in hosts:
        d = host_workdirs[host.name]
        assert d.is_dir() and not any(d.iterdir()) and d.parent == host.workdir
    groups = {"prefill": hosts[:2], "decode": hosts[2:4]}
    path = ssh_cluster.write_inventory(
        tmp_path / "inv.yaml", groups, {"model": "tiny"}, workdirs=host_workdirs
    )
    doc = yaml.safe_load(path.read_text())["all"]
    assert doc["vars"] == {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(ssh_cluster.client_key),
        "model": "tiny",
    }
    assert doc["children"]["prefill"]["hosts"][hosts[1].name] == {
        "ansible_host": hosts[1].address,
        "workdir": str(host_workdirs[hosts[1].name]),
    }


def test_ssh_env_gives_paramiko_default_host_key_checking(
    ssh_cluster: TestCluster, ssh_env: dict[str, str]
) -> None:
    host = ssh_cluster.hosts[0]
    code = (
        "import paramiko, sys\n"
        "c = paramiko.SSHClient(); c.load_system_host_keys()\n"
        "c.set_missing_host_key_policy(paramiko.RejectPolicy())\n"
        "c.connect(sys.argv[1], username='root', key_filename=sys.argv[2], timeout=5,\n"
        "          look_for_keys=False, allow_agent=False)\n"
        "print(c.exec_command('hostname')[1].read().decode().strip())"
    )
    argv = [sys.executable, "-c", code, host.address, str(ssh_cluster.client_key)]
    proc = subprocess.run(argv, env=ssh_env, capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout.strip()) == (0, host.name), proc.stderr
    assert "SSH_AUTH_SOCK" not in ssh_env


@pytest.fixture
def small_cluster(ssh_cluster: TestCluster) -> Iterator[TestCluster]:
    """A separate 2-host cluster (after `ssh_cluster`, so tools are checked); always torn down."""
    cluster = TestCluster(2).start()
    try:
        yield cluster
    finally:
        cluster.teardown()


def _leftovers(cluster: TestCluster, pid: int) -> list[str]:
    prefix = f"tkt-{cluster.session}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [n for n in netns.split() + links.split() if n.startswith(prefix)]
    found += [str(p) for p in (cluster.root, *NETNS_ETC.glob(f"{prefix}*")) if p.exists()]
    with contextlib.suppress(OSError):  # a zombie is dead: PID 1 reaps it in its own time
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            found.append(f"pid {pid}")
    return found


def _start_stray_sleep(cluster: TestCluster) -> int:
    with _connect(cluster, cluster.hosts[1]) as client:
        rc, out, _ = _exec(client, "setsid nohup sleep 1000 >/dev/null 2>&1 </dev/null & echo $!")
    assert rc == 0
    pid = int(out)
    assert Path(f"/proc/{pid}").exists()
    return pid


def test_teardown_removes_namespaces_bridge_and_processes(small_cluster: TestCluster) -> None:
    pid = _start_stray_sleep(small_cluster)
    assert _leftovers(small_cluster, pid)
    small_cluster.teardown()
    small_cluster.teardown()  # idempotent
    assert _leftovers(small_cluster, pid) == []


def test_sweep_removes_a_crashed_session(small_cluster: TestCluster) -> None:
    pid = _start_stray_sleep(small_cluster)
    small_cluster.create_sudo_user("crash")
    # Pretend the owning pytest died: an owner that cannot be a live process.
    (small_cluster.root / "owner").write_text(f"{2**22 + 1} 0")
    assert small_cluster.session in sweep_stale()
    assert _leftovers(small_cluster, pid) == []
    assert f"tkt-{small_cluster.session}-crash" not in Path("/etc/passwd").read_text()


def test_sweep_spares_live_sessions(ssh_cluster: TestCluster) -> None:
    assert ssh_cluster.session not in sweep_stale()
    assert os.path.exists(f"/run/netns/{ssh_cluster.hosts[0].netns}")
