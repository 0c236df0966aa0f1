"""Fixtures for integration tests: a session of network-namespace hosts running real sshd.

Why: toolkit's SSH paths must be tested against real OpenSSH on several machines, in CI too.
The tests skip (with the reason) when the machine cannot host namespaces: not root, or `ip`,
`sshd`, `iptables` missing (`scripts/setup.sh` installs them). With `CI` set they fail
instead, so a CI image that lost sshd does not go green by skipping.

Fixtures:
- `ssh_cluster` (session): a started `netns.TestCluster` of `TOOLKIT_TEST_HOSTS` (default 6)
  hosts, torn down at the end even when tests fail; leftovers of crashed runs are swept first.
- `host_workdirs` (function): {host name: a fresh empty directory on that host}.
- `ssh_env` (function): environment for running the CLI as a subprocess, HOME being a temp
  dir whose ~/.ssh/known_hosts lists every host's key (no private key there: the inventory
  must name it), proxies and the SSH agent removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, missing_tools, sweep_stale

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")


def _unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network-namespace SSH hosts need root"
    missing = missing_tools()
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup.sh installs them)"
    return None


@pytest.fixture(scope="session")
def ssh_cluster() -> Iterator[TestCluster]:
    """A started cluster of namespace hosts with sshd, torn down after the session."""
    reason = _unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"integration tests must run in CI: {reason}")
        pytest.skip(reason)
    sweep_stale()
    cluster = TestCluster(int(os.environ.get("TOOLKIT_TEST_HOSTS", "6"))).start()
    try:
        yield cluster
    finally:
        cluster.teardown()


@pytest.fixture
def host_workdirs(ssh_cluster: TestCluster, request: pytest.FixtureRequest) -> dict[str, Path]:
    """A new empty directory per host for this test, keyed by host name."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    return ssh_cluster.fresh_workdirs(tag)


@pytest.fixture
def ssh_env(ssh_cluster: TestCluster, tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI subprocess: Paramiko finds the hosts' keys in ~/.ssh/known_hosts.

    OpenSSH's `ssh` reads ~ from the password database, not HOME: give it
    `ssh_cluster.ssh_options()` instead.
    """
    home = tmp_path / "home"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    shutil.copyfile(ssh_cluster.known_hosts, ssh_dir / "known_hosts")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARS and k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
    )
    return env
