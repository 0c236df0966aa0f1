"""~/.ssh/config is honoured: hosts reachable only through a bastion (ProxyJump).

The two serving hosts refuse SSH from the control machine (a firewall rule on their own
namespace); only the bastion may reach them. With a ProxyJump entry in ~/.ssh/config,
`toolkit up` / `status` / `down` work unchanged; without it, the hosts are unreachable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, TestHost
from toolkit_cli import HOST_PYTHON, kill_leftovers, run_processes, toolkit

pytestmark = pytest.mark.integration


def _ssh_rule(host: TestHost, source: str) -> list[str]:
    reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    return ["INPUT", "-s", source, "-p", "tcp", "--dport", str(host.port), *reject]


@pytest.fixture
def behind_bastion(ssh_cluster: TestCluster) -> Iterator[tuple[TestHost, list[TestHost]]]:
    """(bastion, [two hosts that refuse SSH from the control machine])."""
    bastion, *hidden = ssh_cluster.hosts[3:6]
    for host in hidden:
        host.run(["iptables", "-w", "-I", *_ssh_rule(host, ssh_cluster.gateway)])
    try:
        yield bastion, hidden
    finally:
        for host in hidden:
            host.run(["iptables", "-w", "-D", *_ssh_rule(host, ssh_cluster.gateway)], check=False)
        kill_leftovers(hidden)


def test_proxyjump_from_ssh_config_reaches_hosts_behind_a_bastion(
    ssh_cluster: TestCluster,
    behind_bastion: tuple[TestHost, list[TestHost]],
    ssh_env: dict,
    host_workdirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    bastion, hidden = behind_bastion
    inventory = ssh_cluster.write_inventory(
        tmp_path / "inv.yaml",
        {"mixed": hidden},
        {"model_path": "/m", "python": HOST_PYTHON},
        workdirs=host_workdirs,
    )

    def run(*args: str):
        return toolkit(*args, env=ssh_env, cwd=tmp_path, timeout=240)

    up_args = ("up", "-p", "a3-mixed-3k5", "-i", str(inventory), "--rehearse")
    direct = run(*up_args, "--load-seconds", "1")
    assert direct.returncode != 0
    for host in hidden:
        assert f"unreachable: [{host.name}]" in direct.stdout, direct.stdout
    assert not run_processes(hidden)

    key = ssh_cluster.client_key
    config = [f"Host {bastion.address}", f"  IdentityFile {key}", ""]
    for host in hidden:
        config += [
            f"Host {host.address}",
            f"  ProxyJump root@{bastion.address}:{bastion.port}",
            "",
        ]
    ssh_config = Path(ssh_env["HOME"]) / ".ssh" / "config"
    ssh_config.write_text("\n".join(config))

    up = run(*up_args, "--load-seconds", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"READY — 127.0.0.1:6688 on {hidden[0].name} answered" in up.stdout
    status = run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("yes") >= 2, status.stdout
    down = run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not run_processes(hidden)
