"""A user's own role, added to `up`'s prepare play by the profile's `plays:` key and found
with --roles-dir, runs on real SSH namespace hosts like the shipped roles: idempotent
(`command` with `creates:`, `copy`), honest in check mode, and a failing task stops the run
before any engine starts, showing the task's stderr."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import TestCluster, TestHost
from toolkit_cli import HOST_PYTHON, kill_leftovers, run_processes, toolkit

pytestmark = pytest.mark.integration
PROFILE = "a3-1p1d-64k"
SITE_ROLE = """\
- name: make the site marker once
  command:
    cmd: "touch {{ workdir }}/site-marker"
    creates: "{{ workdir }}/site-marker"
- name: write the site notes
  copy:
    dest: "{{ workdir }}/site-notes.txt"
    content: "prepared {{ host }} for {{ profile }}\\n"
    mode: "0640"
"""
BROKEN_ROLE = """\
- name: mount the weights share
  shell:
    cmd: "echo 'mount: /mnt/weights: special device nfs:/w does not exist' >&2; exit 32"
"""


class Env:
    def __init__(self, hosts: list[TestHost], env: dict, tmp: Path, inventory: Path) -> None:
        self.hosts, self.env, self.cwd, self.inventory = hosts, env, tmp, inventory
        self.roles = tmp / "roles"
        for name, text in (("site_prep", SITE_ROLE), ("broken_mount", BROKEN_ROLE)):
            (self.roles / name / "tasks").mkdir(parents=True)
            (self.roles / name / "tasks" / "main.yaml").write_text(text)

    def up(self, role: str, *extra: str) -> tuple[int, str]:
        done = toolkit(
            "up", "-p", PROFILE, "-i", str(self.inventory), "--rehearse", "--load-seconds", "1",
            "--skip-check", "--roles-dir", str(self.roles), "--set", f"plays.prepare=[{role}]",
            *extra, env=self.env, cwd=self.cwd, timeout=240,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def down(self) -> None:
        done = toolkit("down", "-i", str(self.inventory), env=self.env, cwd=self.cwd, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def env(
    ssh_cluster: TestCluster, host_workdirs: dict[str, Path], ssh_env: dict, tmp_path: Path
) -> Iterator[Env]:
    hosts = ssh_cluster.hosts[:4]
    inventory = ssh_cluster.write_inventory(
        tmp_path / "inv.yaml",
        {"prefill": hosts[:2], "decode": hosts[2:4]},
        {"model_path": "/models/glm-5.1-w4a8", "python": HOST_PYTHON},
        workdirs=host_workdirs,
    )
    e = Env(hosts, ssh_env, tmp_path, inventory)
    e.workdirs = host_workdirs
    try:
        yield e
    finally:
        toolkit("down", "-i", str(inventory), env=ssh_env, cwd=tmp_path, timeout=120)
        leftovers = kill_leftovers(ssh_cluster.hosts)
        assert not leftovers, f"processes survived `toolkit down`: {leftovers}"


def _lines(out: str, status: str, task: str) -> list[str]:
    """The recap lines of one task with one status, one per host (Rich may wrap a line)."""
    flat = re.sub(r"\n(?![a-z ]+: \[)", " ", out)
    return [line for line in flat.splitlines() if line.startswith(f"{status}: [") and task in line]


def test_a_user_role_is_idempotent_and_honest_in_check_mode(env: Env) -> None:
    serving = [h.name for h in env.hosts]
    rc, out = env.up("site_prep", "--check")
    assert rc == 0, out
    would = _lines(out, "would change", "make the site marker once")
    assert len(would) == len(serving) and all("would run" in line for line in would), out
    assert len(_lines(out, "would change", "write the site notes")) == len(serving), out
    for host in env.hosts:
        assert not (env.workdirs[host.name] / "site-marker").exists(), "check mode changed a host"

    rc, out = env.up("site_prep")
    assert rc == 0 and "READY" in out, out
    assert len(_lines(out, "changed", "make the site marker once")) == len(serving), out
    assert len(_lines(out, "changed", "write the site notes")) == len(serving), out
    notes = env.workdirs[env.hosts[0].name] / "site-notes.txt"
    assert notes.read_text() == f"prepared {env.hosts[0].name} for {PROFILE}\n"
    assert oct(notes.stat().st_mode & 0o777) == "0o640"
    env.down()

    rc, out = env.up("site_prep")
    assert rc == 0 and "READY" in out, out
    assert len(_lines(out, "ok", "make the site marker once")) == len(serving), out
    assert len(_lines(out, "ok", "write the site notes")) == len(serving), out
    assert not _lines(out, "changed", "make the site marker once"), out
    env.down()


def test_a_failing_user_task_stops_the_run_before_any_engine_starts(env: Env) -> None:
    rc, out = env.up("broken_mount")
    assert rc != 0, out
    assert len(_lines(out, "failed", "mount the weights share")) == len(env.hosts), out
    assert "special device nfs:/w does not exist" in out, out
    assert "READY" not in out and "start prefill" not in out and "start decode" not in out, out
    assert not run_processes(env.hosts)
    for host in env.hosts:
        assert not list((env.workdirs[host.name] / "runs").glob("*/*.sh")), "a launch script"
