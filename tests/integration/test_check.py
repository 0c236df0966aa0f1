"""`toolkit check` (and `up`'s use of it) over real SSH against network-namespace hosts.

Why: each fault the preflight exists for (a held port, a missing model directory, two
sglang versions, flags the installed sglang rejects, a bootstrap port nobody can reach)
must be caught on real machines, named precisely, and nothing else may fail. Each test
runs the real CLI as a subprocess; tkt-h1 tkt-h2 are the prefill instance, tkt-h3 tkt-h4
the decode instance of a3-1p1d-64k (its router and benchmark on tkt-h1, or on tkt-h5).
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
OLD_SGLANG = "0.5.9"
NEW_SGLANG = "0.5.23"


@pytest.fixture
def hosts(ssh_cluster: TestCluster) -> list[TestHost]:
    assert len(ssh_cluster.hosts) >= 5, "the check tests need 5 namespace hosts"
    return ssh_cluster.hosts[:5]


@pytest.fixture
def rig(
    ssh_cluster: TestCluster,
    hosts: list[TestHost],
    host_workdirs: dict[str, Path],
    ssh_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[Setup]:
    yield Setup(ssh_cluster, hosts, host_workdirs, ssh_env, tmp_path)


class Setup:
    """One test's inventory, model directories and CLI runner."""

    def __init__(self, cluster, hosts, workdirs, env, tmp_path) -> None:
        self.cluster, self.hosts, self.workdirs = cluster, hosts, workdirs
        self.env = {**env, "TOOLKIT_STATE_DIR": str(tmp_path / "state")}
        self.tmp = tmp_path
        self.set_env = tmp_path / "set_env.sh"
        self.set_env.write_text("export TOOLKIT_TEST_CANN=1\n")

    def model(self, host: TestHost, extra: bool = False) -> Path:
        path = self.workdirs[host.name] / "model"
        path.mkdir()
        (path / "config.json").write_text('{"model_type": "glm"}')
        (path / "model-00001-of-00001.safetensors").write_bytes(b"w" * 4096)
        if extra:
            (path / "stray.bin").write_bytes(b"x")
        return path

    def inventory(
        self,
        python: dict[str, str] | None = None,
        router: TestHost | None = None,
    ) -> Path:
        prefill, decode = self.hosts[:2], self.hosts[2:4]
        groups: dict[str, list[TestHost]] = {"prefill": prefill, "decode": decode}
        if router is not None:
            groups.update(router=[router], bench=[router])
        path = self.cluster.write_inventory(
            self.tmp / "inventory.yaml",
            groups,
            {"python": HOST_PYTHON},
            workdirs=self.workdirs,
        )
        doc = yaml.safe_load(path.read_text())
        for group in doc["all"]["children"].values():
            for name, host_vars in group["hosts"].items():
                host_vars["model_path"] = str(self.workdirs[name] / "model")
                if python and name in python:
                    host_vars["python"] = python[name]
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def run(self, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "toolkit.cli", *args, "-p", PROFILE]
        argv += ["-i", str(inventory or self.inventory())]
        started = time.monotonic()
        done = subprocess.run(
            argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=180
        )
        print(f"\n$ toolkit {' '.join(args)}  ({time.monotonic() - started:.1f} s)\n{done.stdout}")
        return done

    def check(self, *args: str, inventory: Path | None = None) -> dict:
        done = self.run("check", "--format", "json", *args, inventory=inventory)
        assert done.returncode in (0, 1), done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] == (done.returncode == 0)
        return report

    def real(self) -> list[str]:
        """Options of a non-rehearsal check that passes on these hosts."""
        return ["--translate-flags", "--set", f"source=[{self.set_env}]"]


def failures(report: dict) -> dict[tuple[str, str], dict]:
    return {(f["host"], f["check"]): f for f in report["findings"] if f["status"] == "failed"}


def statuses(report: dict, check: str) -> dict[str, str]:
    return {f["host"]: f["status"] for f in report["findings"] if f["check"] == check}


# ----------------------------------------------------------------------------- clean, flags


def test_clean_setup_passes_and_prints_the_table(rig: Setup) -> None:
    for host in rig.hosts[:4]:
        rig.model(host)
    done = rig.run("check", *rig.real())
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "✔ every check passed on 4 hosts" in out
    for row in ("ssh", "engine", "ports", "model", "reach", "flags", "clock", "nic"):
        assert f"│ {row}" in out
    # No npu-smi on the namespace hosts: counted as skipped, with the reason.
    assert "– accel skipped on tkt-h1, tkt-h2, tkt-h3, tkt-h4: npu-smi not found" in out
    assert "translated --nsa-prefill-cp-mode in-seq-split → --cp-strategy zigzag" in out


def test_seed003_flags_are_reported_and_translate_flags_fixes_them(rig: Setup) -> None:
    for host in rig.hosts[:4]:
        rig.model(host)
    source = ["--set", f"source=[{rig.set_env}]"]
    report = rig.check(*source)
    failed = failures(report)
    assert set(failed) == {(h.name, "flags") for h in rig.hosts[:4]}
    prefill = failed[("tkt-h1", "flags")]["detail"]
    assert "--enable-nsa-prefill-context-parallel is not accepted by sglang 0.5.23" in prefill
    assert "renamed to --enable-prefill-cp" in prefill
    assert "renamed to --cp-strategy zigzag (in-seq-split → zigzag)" in prefill
    assert "--translate-flags" in failed[("tkt-h1", "flags")]["fix"]
    decode = failed[("tkt-h3", "flags")]["detail"]
    assert "--prefill-round-robin-balance is not accepted by sglang 0.5.23: removed" in decode
    assert "--cuda-graph-bs" in decode and "renamed to --cuda-graph-bs-decode" in decode
    notes = [n for f in report["findings"] for n in f["notes"]]
    assert any("--moe-dense-tp is not a flag" in n for n in notes)

    fixed = rig.check(*source, "--translate-flags")
    assert fixed["ok"], failures(fixed)
    assert set(statuses(fixed, "flags").values()) == {"ok"}
    assert any("--enable-prefill-cp" in note for note in fixed["notes"])
    assert any("--prefill-round-robin-balance → (dropped)" in note for note in fixed["notes"])


# ----------------------------------------------------------------------------- faults


def test_a_held_port_fails_naming_host_and_port(rig: Setup) -> None:
    decode0 = rig.hosts[2]
    with decode0.listen(8001):
        report = rig.check("--rehearse")
    failed = failures(report)
    assert list(failed) == [("tkt-h3", "ports")]
    detail = failed[("tkt-h3", "ports")]["detail"]
    held = f"something listens on {decode0.address}:8001"
    assert detail == f"port 8001 (decode0.0 http) is in use on tkt-h3: {held}"
    assert "roles.decode.port" in failed[("tkt-h3", "ports")]["fix"]


def test_a_missing_model_directory_on_one_host(rig: Setup) -> None:
    rig.model(rig.hosts[0])
    rig.model(rig.hosts[1], extra=True)
    rig.model(rig.hosts[2])
    report = rig.check(*rig.real())
    failed = failures(report)
    assert set(failed) == {("tkt-h4", "model"), ("tkt-h2", "model")}
    missing = rig.workdirs["tkt-h4"] / "model"
    assert failed[("tkt-h4", "model")]["detail"] == f"tkt-h4: model_path {missing} does not exist"
    assert "extra stray.bin" in failed[("tkt-h2", "model")]["detail"]
    assert statuses(report, "model")["tkt-h1"] == "ok"


@pytest.fixture(scope="session")
def sglang_venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two venvs with different sglang versions (no dependencies: only the metadata and
    source matter), built once per session."""
    index = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "sglang"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if OLD_SGLANG not in index.stdout:
        pytest.skip(f"PyPI is unreachable (pip index versions sglang: {index.stderr[-200:]})")
    root = tmp_path_factory.mktemp("sglang-venvs")
    pythons = {}
    for version in (NEW_SGLANG, OLD_SGLANG):
        venv = root / f"sglang-{version}"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = venv / "bin" / "python"
        install = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-compile",
        ]
        subprocess.run([*install, "--no-deps", f"sglang=={version}"], check=True, timeout=600)
        pythons[version] = str(python)
    return pythons


def test_two_sglang_versions_are_reported_as_drift(
    rig: Setup, sglang_venvs: dict[str, str]
) -> None:
    h1, h2, h3, h4, h5 = rig.hosts
    new, old = sglang_venvs[NEW_SGLANG], sglang_venvs[OLD_SGLANG]
    python = {h1.name: new, h2.name: new, h3.name: old, h4.name: old}
    report = rig.check("--rehearse", inventory=rig.inventory(python, router=h5))
    failed = failures(report)
    assert set(failed) == {(h.name, "engine") for h in (h1, h2, h3, h4)}
    listing = "tkt-h1 → 0.5.23, tkt-h2 → 0.5.23, tkt-h3 → 0.5.9, tkt-h4 → 0.5.9"
    assert failed[("tkt-h3", "engine")]["detail"] == (
        f"sglang versions differ between serving hosts: {listing}"
    )
    assert failed[("tkt-h3", "engine")]["summary"] == "0.5.9 ≠ 0.5.23"
    assert "pip install sglang==0.5.23 on tkt-h3, tkt-h4" in failed[("tkt-h1", "engine")]["fix"]
    assert statuses(report, "router") == {"tkt-h5": "ok"}


def test_unreachable_bootstrap_port_without_a_listener(rig: Setup) -> None:
    # The prefill leader's bootstrap server binds 127.0.0.1 only, and the router hands
    # decode the address 127.0.0.1: nothing listens where decode and prefill rank 1 dial.
    report = rig.check("--rehearse", "--set", "roles.prefill.host=127.0.0.1")
    failed = failures(report)
    assert set(failed) == {("tkt-h2", "reach"), ("tkt-h3", "reach"), ("tkt-h4", "reach")}
    h1 = rig.hosts[0]
    assert (
        f"tkt-h2 → tkt-h1 {h1.address}:8998 (prefill0.0 bootstrap): connection refused"
        in (failed[("tkt-h2", "reach")]["detail"])
    )
    assert (
        "tkt-h3 → tkt-h1 127.0.0.1:8998 (prefill0.0 bootstrap): connection refused"
        in (failed[("tkt-h3", "reach")]["detail"])
    )


def test_firewalled_bootstrap_and_dist_init_ports_are_caught(rig: Setup) -> None:
    h1, h2, h3, h4, _ = rig.hosts
    h1.block_port(8998)  # dropped: the connect times out
    h3.block_port(5000, mode="reject")  # rejected: refused at once
    try:
        started = time.monotonic()
        report = rig.check("--rehearse")
        took = time.monotonic() - started
    finally:
        h1.unblock_port(8998)
        h3.unblock_port(5000)
    failed = failures(report)
    assert set(failed) == {("tkt-h2", "reach"), ("tkt-h3", "reach"), ("tkt-h4", "reach")}
    timeout = "no answer within 2 s (a firewall dropping packets?)"
    for host in (h2, h3, h4):
        detail = failed[(host.name, "reach")]["detail"]
        assert f"{host.name} → tkt-h1 {h1.address}:8998 (prefill0.0 bootstrap): {timeout}" in detail
    assert (
        f"tkt-h4 → tkt-h3 {h3.address}:5000 (decode0.0 dist-init): connection refused"
        in (failed[("tkt-h4", "reach")]["detail"])
    )
    assert "open TCP 8998 on tkt-h1 to tkt-h2" in failed[("tkt-h2", "reach")]["fix"]
    assert took < 20


# ----------------------------------------------------------------------------- up


def test_up_refuses_to_launch_when_the_check_fails(rig: Setup) -> None:
    decode0 = rig.hosts[2]
    with decode0.listen(8001):
        done = rig.run("up", "--rehearse")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "✘ tkt-h3 ports: port 8001 (decode0.0 http) is in use on tkt-h3" in done.stdout
    assert "preflight check failed" in done.stderr and "nothing was started" in done.stderr
    for workdir in rig.workdirs.values():
        assert not (workdir / "runs").exists() and not (workdir / "active.json").exists()


# ----------------------------------------------------------------------------- become


def test_become_checks_as_the_login_user_and_reports_a_refused_sudo(rig: Setup) -> None:
    # The check's agent runs as the login user (the sudo row asks `sudo -n true`), so a
    # refused sudo is one ✘ among facts still gathered, not a host without facts.
    from netns import SUDOERS_D

    user = rig.cluster.create_sudo_user("checker")
    entry = pwd.getpwnam(user)
    for path in rig.workdirs.values():
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path = rig.inventory()
    doc = yaml.safe_load(path.read_text())
    # The system python3: the login user cannot run root's HOST_PYTHON (under /root).
    doc["all"]["vars"].update(ansible_user=user, ansible_become=True, python="/usr/bin/python3")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    report = rig.check("--rehearse", inventory=path)
    # The system python3 has no sglang-router nor bench client: those two cells only.
    no_tools = {("tkt-h1", "router"), ("tkt-h1", "bench")}
    assert set(failures(report)) == no_tools
    assert set(statuses(report, "sudo").values()) == {"ok"}
    assert set(statuses(report, "python").values()) == {"ok"}

    (SUDOERS_D / user).unlink()
    refused = rig.check("--rehearse", inventory=path)
    failed = failures(refused)
    assert set(failed) == {(h.name, "sudo") for h in rig.hosts[:4]} | no_tools
    assert "`sudo -n true` failed" in failed[("tkt-h1", "sudo")]["detail"]
    assert set(statuses(refused, "ports").values()) == {"ok"}
    assert set(statuses(refused, "reach").values()) == {"ok"}
