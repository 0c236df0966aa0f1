"""npu-smi / nvidia-smi parsing and the card check, from fixtures.

The first NPU of each npu-smi fixture and the first GPU row are verbatim from
shared/research/sglang-protocol.md §5 (an Atlas 800I A3 env dump, a 910B README,
an H100 run); the other devices extend them in the same layout to full 8-NPU hosts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.preflight.accelerators import (
    DeviceProcess,
    compare_with_need,
    parse_npu_smi,
    parse_nvidia_smi,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"
A3 = (FIXTURES / "npu_smi_a3_16chips.txt").read_text()
A2 = (FIXTURES / "npu_smi_a2_910b_8npus.txt").read_text()
GPUS = (FIXTURES / "nvidia_smi_8gpus.csv").read_text()


def test_a3_has_16_chips_on_8_npus():
    report = parse_npu_smi(A3)
    accels = report.accelerators
    assert len(accels) == 16
    assert [(a.index, a.chip, a.phy_id) for a in accels[:4]] == [
        (0, 0, 0),
        (0, 1, 1),
        (1, 0, 2),
        (1, 1, 3),
    ]
    assert [a.phy_id for a in accels] == list(range(16))
    first = accels[0]
    assert (first.name, first.health, first.bus_id) == ("Ascend910", "OK", "0000:9D:00.0")
    assert (first.memory_used_mb, first.memory_total_mb, first.memory_free_mb) == (
        26690,
        65536,
        38846,
    )
    assert accels[1].memory_used_mb == 26457  # the chip row whose power column is "-"
    assert report.tool_version == "25.2.1"
    assert report.processes == (
        DeviceProcess(0, 0, 3742689, "", 23631),
        DeviceProcess(0, 1, 3743331, "", 23631),
    )


def test_a3_summary():
    summary = parse_npu_smi(A3).summary
    assert (summary.kind, summary.cards, summary.boards, summary.processes) == ("npu", 16, 8, 2)
    assert summary.memory_total_mb == 16 * 65536
    assert summary.memory_used_mb == 26690 + 26457 + sum(3391 + 7 * p for p in range(2, 16))
    assert str(summary) == (
        "8 NPUs / 16 chips (Ascend910), 101454 of 1048576 MB in use, 2 processes"
    )


def test_a2_910b_has_one_chip_per_npu():
    report = parse_npu_smi(A2)
    accels = report.accelerators
    assert len(accels) == 8
    assert {a.chip for a in accels} == {0}
    assert [a.index for a in accels] == list(range(8))
    # HBM is the last used/total pair: 1365/32768, not Memory-Usage 1197/13553.
    assert (accels[0].memory_used_mb, accels[0].memory_total_mb) == (1365, 32768)
    assert (accels[0].name, accels[0].phy_id, accels[0].label) == ("910B", None, "NPU 0")
    assert report.processes == ()
    assert report.tool_version == "24.1.0"
    assert str(report.summary) == "8 NPUs (910B), 10913 of 262144 MB in use"


def test_nvidia_smi_csv():
    report = parse_nvidia_smi(GPUS + "\n")
    accels = report.accelerators
    assert [a.index for a in accels] == list(range(8))
    assert {a.name for a in accels} == {"NVIDIA H100 80GB HBM3"}
    assert (accels[0].memory_total_mb, accels[0].memory_used_mb) == (81559, 0)
    assert accels[5].memory_used_mb == 80811
    assert (accels[0].kind, accels[0].health, accels[0].label) == ("gpu", None, "GPU 0")
    assert report.summary.cards == 8


def test_nvidia_smi_unavailable_values_become_none():
    (gpu,) = parse_nvidia_smi("0, NVIDIA GH200 480GB, [N/A], [N/A]\n").accelerators
    assert (gpu.memory_total_mb, gpu.memory_used_mb, gpu.memory_free_mb) == (None, None, None)


@pytest.mark.parametrize("text", ["", "No devices were found\n", "npu-smi: command not found"])
def test_no_devices(text):
    assert parse_npu_smi(text).accelerators == ()
    assert parse_nvidia_smi(text).accelerators == ()
    assert compare_with_need((), 16, None) == ["no accelerators found; need 16 cards"]


def test_a3_meets_a16_card_need_without_memory_floor():
    assert compare_with_need(parse_npu_smi(A3).accelerators, 16, None) == []


def test_a3_busy_chips_fail_the_memory_floor():
    problems = compare_with_need(parse_npu_smi(A3).accelerators, 16, 60000)
    assert problems == [
        "NPU 0 chip 0: 38846 MB free of 65536 MB (26690 MB in use), need 60000 MB",
        "NPU 0 chip 1: 39079 MB free of 65536 MB (26457 MB in use), need 60000 MB",
    ]


def test_unhealthy_chip_is_reported():
    text = A3.replace(
        "| 3     Ascend910           | OK            | -  ",
        "| 3     Ascend910           | Warning       | -  ",
    )
    accels = parse_npu_smi(text).accelerators
    assert accels[7].health == "Warning"
    assert compare_with_need(accels, 16, 0) == ["NPU 3 chip 1: health is Warning"]
    assert parse_npu_smi(text).summary.unhealthy == ("NPU 3 chip 1",)


def test_too_few_cards_and_only_the_used_ones_checked():
    gpus = parse_nvidia_smi(GPUS).accelerators
    assert compare_with_need(gpus, 16, 1000) == [
        "need 16 cards, found 8 GPUs",
        "GPU 5: 748 MB free of 81559 MB (80811 MB in use), need 1000 MB",
    ]
    assert compare_with_need(gpus, 4, 1000) == []  # GPU 5 is not among the first 4
    a2 = parse_npu_smi(A2).accelerators
    assert compare_with_need(a2, 16, None) == ["need 16 cards, found 8 NPUs"]
