"""The check's table and reasons as a user sees them, and the CLI options around it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tests.support.engines import SGLANG_DIR
from tests.unit.test_cli_plan import INVENTORY
from tests.unit.test_planner import plan_for
from toolkit.preflight.check_facts import CheckReport, Finding
from toolkit.render.check import render_check

HOSTS = ["tkt-h1", "tkt-h2", "tkt-h3", "tkt-h4", "tkt-h5", "tkt-h6"]


def report(findings: list[Finding], hosts: list[str] = HOSTS) -> CheckReport:
    plan = plan_for("a3-1p1d-64k")
    return CheckReport("a3-1p1d-64k", False, hosts, findings, plan, elapsed_s=1.25)


def rendered(rep: CheckReport, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render_check(rep, console)
    return console.export_text().splitlines()


def test_table_fits_the_terminal_and_reasons_follow_in_full() -> None:
    findings = [Finding(h, "ssh", "ok", "ok") for h in HOSTS]
    findings += [Finding(h, "engine", "ok", "0.5.23 (a long version text)") for h in HOSTS]
    findings.append(
        Finding(
            "tkt-h3",
            "ports",
            "failed",
            "busy 8001",
            "port 8001 (decode0.0 http) is in use on tkt-h3: something listens on 10.0.0.3:8001",
            "stop what holds it, or move it: --set roles.decode.port=<port>",
        )
    )
    findings += [Finding(h, "accel", "skipped", "no npu", "npu-smi not found") for h in HOSTS[:2]]
    findings.append(
        Finding("tkt-h1", "flags", "ok", "30 ok", "", notes=("prefill0.0: translated x",))
    )
    lines = rendered(report(findings))
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80  # reasons soft-wrap: copy-paste intact
    assert lines[1].startswith("┏") and lines[1].endswith("┓")
    text = "\n".join(lines)
    held = "something listens on 10.0.0.3:8001"
    assert f"✘ tkt-h3 ports: port 8001 (decode0.0 http) is in use on tkt-h3: {held}" in text
    assert "    fix: stop what holds it, or move it: --set roles.decode.port=<port>" in text
    assert "– accel skipped on tkt-h1, tkt-h2: npu-smi not found" in text
    assert "note tkt-h1: prefill0.0: translated x" in text
    assert lines[-1] == "✘ 1 problem on tkt-h3 in 1.2 s"
    # Checks run down the side, in the documented order; absent checks get no row.
    rows = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert rows == ["ssh", "engine", "accel", "ports", "flags"]


def test_wide_terminals_show_whole_cells_and_a_passing_verdict() -> None:
    findings = [Finding(h, "engine", "ok", "0.5.23 (a long version text)") for h in HOSTS[:2]]
    lines = rendered(report(findings, HOSTS[:2]), width=160)
    assert "│ ✔ 0.5.23 (a long versio… │" in "\n".join(lines)  # 24 columns a cell
    assert lines[-1] == "✔ every check passed on 2 hosts in 1.2 s"


def test_json_report_lists_every_finding() -> None:
    data = report([Finding("tkt-h1", "ssh", "failed", "unreachable", "no route", "")]).to_dict()
    assert data["schema"] == "toolkit.check/v1" and data["ok"] is False
    assert data["findings"][0]["detail"] == "no route"
    json.dumps(data)


def toolkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_up_refuses_translate_flags_without_the_check(tmp_path: Path) -> None:
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    args = ["up", "-p", "a3-1p1d-64k", "-i", "inv.yaml", "--skip-check", "--translate-flags"]
    done = toolkit(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "--translate-flags reads each host's engine in the check" in done.stderr


def test_plan_shows_the_translation(tmp_path: Path) -> None:
    if SGLANG_DIR is None:
        pytest.skip("sglang is not installed")
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    args = ["plan", "-p", "a3-1p1d-64k", "-i", "inv.yaml", "--translate-flags"]
    data = json.loads(toolkit(*args, "--format", "json", cwd=tmp_path).stdout)
    assert "--cp-strategy" in data["nodes"][0]["argv"]
    assert any("→ --cp-strategy zigzag" in note for note in data["notes"])
    text = toolkit(*args, cwd=tmp_path).stdout
    assert "note: --translate-flags for sglang 0.5.23 (prefill0.0, prefill0.1)" in text
