"""`toolkit profiles` and `toolkit plan` as a user runs them (subprocess, real console)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

INVENTORY = """\
all:
  vars: {model_path: /models/glm-5.1-w4a8, nic: enp23s0f3}
  children:
    prefill: {hosts: {10.9.1.11: {}, 10.9.1.12: {}}}
    decode:  {hosts: {10.9.2.11: {}, 10.9.2.12: {}}}
"""


def toolkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_profiles_table_lists_every_seed_003_profile() -> None:
    result = toolkit("profiles")
    assert result.returncode == 0, result.stderr
    for name in ("a3-mixed-3k5", "a3-1p1d-64k", "a3-2p1d-128k-prefix90", "a3-4p1d-64k-prefix90"):
        assert name in result.stdout
    assert "Atlas 800I A3" in result.stdout and "20 ms" in result.stdout


def test_plan_json_and_text(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    result = toolkit("plan", "-p", "a3-1p1d-64k", "-i", str(inv), "--format", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert [n["host"] for n in plan["nodes"]] == [
        "10.9.1.11",
        "10.9.1.12",
        "10.9.2.11",
        "10.9.2.12",
    ]
    text = toolkit("plan", "-p", "a3-1p1d-64k", "-i", str(inv))
    assert text.returncode == 0, text.stderr
    assert "--dist-init-addr 10.9.1.11:5000" in text.stdout
    assert "prefill0.1" in text.stdout


def test_plan_sh_writes_runnable_scripts(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    out = tmp_path / "scripts"
    result = toolkit(
        "plan", "-p", "a3-1p1d-64k", "-i", str(inv), "--format", "sh", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "bench.sh",
        "decode0.0-10.9.2.11.sh",
        "decode0.1-10.9.2.12.sh",
        "prefill0.0-10.9.1.11.sh",
        "prefill0.1-10.9.1.12.sh",
        "router.sh",
    ]


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY.replace("nic: enp23s0f3", "nick: enp23s0f3"))
    result = toolkit("plan", "-p", "a3-1p1d-64k", "-i", str(inv))
    assert result.returncode == 2
    assert f"{inv}:2: unknown variable 'nick'" in result.stderr
    assert "Traceback" not in result.stderr
    inv.write_text(INVENTORY)
    missing = toolkit("plan", "-p", "a3-1p1d-64", "-i", str(inv))
    assert missing.returncode == 2 and "closest: a3-1p1d-64k" in missing.stderr
