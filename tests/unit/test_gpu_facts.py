"""The `devices` row from real tool output: who holds a planned GPU/NPU, and does it fit.

Fixtures: `nvidia_smi_h200_*` are the probe's two CSV queries on one H200 (driver
580.159.04), idle and while another process held 40 GiB; its command line is as /proc
showed it there (see docs/collective.md for the run). `npu_smi_a3_16chips.txt` is the A3
`npu-smi info` listing the accelerator tests already use (two chips held).
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_planner import plan_for
from toolkit.preflight import gpu_facts
from toolkit.preflight.gpu_facts import (
    judge_gpus,
    memory_fraction,
    parse_gpu_apps,
    parse_gpu_state,
    planned_gpus,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"
IDLE = (FIXTURES / "nvidia_smi_h200_gpu_state_idle.csv").read_text()
HELD = (FIXTURES / "nvidia_smi_h200_gpu_state_held.csv").read_text()
APPS = (FIXTURES / "nvidia_smi_h200_gpu_apps_held.csv").read_text()
A3 = (FIXTURES / "npu_smi_a3_16chips.txt").read_text()
# /proc/574/cmdline there, NULs read as spaces (the probe's `gpu_apps` section).
HOLDER = (
    "python3 -c import torch, time, sys; x = torch.empty(40 << 30, dtype=torch.uint8, "
    'device="cuda"); open("/tmp/held", "w").write("1"); time.sleep(300)'
)


def test_h200_state_and_holders_parse() -> None:
    (gpu,) = parse_gpu_state(HELD)
    assert (gpu.index, gpu.total_mb, gpu.used_mb, gpu.free_mb) == (0, 143771, 41487, 101670)
    assert (gpu.persistence, gpu.ecc_mode, gpu.ecc_uncorrected) == ("Enabled", "Enabled", 0)
    (holder,) = parse_gpu_apps(APPS, {"574": HOLDER})
    assert (holder.device, holder.pid, holder.used_mb) == (gpu.uuid, 574, 41478)
    assert holder.command == HOLDER


def test_an_idle_gpu_passes_and_the_fraction_fits() -> None:
    finding = judge_gpus("g1", parse_gpu_state(IDLE), [], [0], 0.8)
    assert finding.status == "ok"
    assert finding.detail == "1 planned GPUs free (no other processes, fraction 0.8 fits)"


def test_a_held_gpu_names_the_pid_and_command_and_the_missing_memory() -> None:
    finding = judge_gpus(
        "g1", parse_gpu_state(HELD), parse_gpu_apps(APPS, {"574": HOLDER}), [0], 0.8
    )
    assert finding.status == "failed"
    assert f"GPU 0: pid 574 ({HOLDER}) holds 41478 MB" in finding.detail
    assert "GPU 0: 101670 MB free of 143771 MB, the memory fraction 0.8 needs 115016 MB" in (
        finding.detail
    )


def test_ecc_errors_fail_and_persistence_off_is_a_note() -> None:
    row = IDLE.strip().split(", ")
    row[5], row[7] = "Disabled", "3"
    finding = judge_gpus("g1", parse_gpu_state(", ".join(row)), [], [0], None)
    assert finding.status == "failed" and "GPU 0: 3 uncorrected ECC errors" in finding.detail
    assert finding.notes == ("GPU 0: persistence mode is off (each start pays the driver load)",)


def test_a_planned_gpu_that_is_not_there_fails() -> None:
    finding = judge_gpus("g1", parse_gpu_state(IDLE), [], [0, 1], None)
    assert "GPU 1 is planned but nvidia-smi lists no such GPU" in finding.detail


def test_fraction_and_planned_gpus_come_from_the_plan() -> None:
    plan = plan_for("rtx6000-qwen35-fp8-tp8", overrides=("env.CUDA_VISIBLE_DEVICES=4,5,6,7",))
    node = plan.nodes[0]
    assert memory_fraction(plan, node) == 0.8
    assert planned_gpus(node, 4) == [4, 5, 6, 7]
    vllm = plan_for("b200-glm5-fp8-vllm")
    assert memory_fraction(vllm, vllm.nodes[0]) is not None


def test_npus_held_by_other_processes_are_named_and_ecc_is_not_guessed() -> None:
    plan = plan_for("a3-1p1d-64k")
    nodes = plan.nodes_on(plan.nodes[0].host)
    finding = gpu_facts.devices(plan, nodes, "p1", {"npu_smi": {"stdout": A3}})
    assert finding is not None and finding.status == "failed"
    assert "NPU 0 chip 0: pid 3742689 holds 23631 MB" in finding.detail
    assert "NPU 0 chip 1: pid 3743331 holds 23631 MB" in finding.detail
    assert finding.notes == ("npu-smi info reports no ECC or persistence columns: not checked",)


def test_no_tool_output_gives_no_row() -> None:
    plan = plan_for("rtx6000-qwen35-fp8-tp8")
    assert gpu_facts.devices(plan, plan.nodes, "g1", {"gpu_state": {"found": False}}) is None
