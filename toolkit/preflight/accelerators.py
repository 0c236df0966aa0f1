"""Read `npu-smi info` and `nvidia-smi` output into devices, and compare them with the need.

The agent's probe (`toolkit/host/probe.py`) runs both tools on every host and ships their raw
output back; parsing happens here, in pure code, so every layout is tested from fixtures.

`npu-smi info` prints each device as a pair of table rows: a name row
(`NPU  Name | Health | Power Temp Hugepages`) and a chip row (`Chip [Phy-ID] | Bus-Id |
AICore Memory-Usage HBM-Usage`). An Atlas A3 NPU carries two chips, each with its own
pair; a 910B (A2) NPU one chip, and its chip row has no Phy-ID. HBM is the last
`used / total` pair of the chip row. A process table (`NPU Chip | Process id | Process
name | Process memory(MB)`) follows.

A *card*, as recipes count them ("Cards: 32" for two A3 nodes), is one device that takes
one rank: an A3 chip, a 910B NPU, a GPU. `compare_with_need` counts cards that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["npu", "gpu"]
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d$")
_USED_TOTAL = re.compile(r"(\d+)\s*/\s*(\d+)")
_NPU_SMI_VERSION = re.compile(r"npu-smi\s+(\S+)")


@dataclass(frozen=True)
class Accelerator:
    """One card: an NPU chip or a GPU."""

    index: int  # NPU id (npu-smi) or GPU index (nvidia-smi)
    chip: int  # chip within the NPU; 0 for GPUs and single-chip NPUs
    name: str
    memory_total_mb: int | None
    memory_used_mb: int | None
    health: str | None  # npu-smi's Health column; None when the tool does not report it
    kind: Kind = "npu"
    phy_id: int | None = None  # A3 chip rows only
    bus_id: str | None = None

    @property
    def memory_free_mb(self) -> int | None:
        if self.memory_total_mb is None or self.memory_used_mb is None:
            return None
        return self.memory_total_mb - self.memory_used_mb

    @property
    def label(self) -> str:
        if self.kind == "gpu":
            return f"GPU {self.index}"
        return f"NPU {self.index}" if self.phy_id is None else f"NPU {self.index} chip {self.chip}"


@dataclass(frozen=True)
class DeviceProcess:
    """A row of npu-smi's process table."""

    index: int
    chip: int
    pid: int
    name: str
    memory_mb: int | None


@dataclass(frozen=True)
class Summary:
    """What a host has, in one line of the check table."""

    kind: Kind | None
    cards: int  # devices that take a rank (chips on A3)
    boards: int  # distinct NPU/GPU indexes
    names: tuple[str, ...]
    memory_total_mb: int
    memory_used_mb: int
    unhealthy: tuple[str, ...]
    processes: int
    tool_version: str | None = None

    def __str__(self) -> str:
        if not self.cards:
            return "no accelerators"
        unit = "GPUs" if self.kind == "gpu" else "NPUs"
        chips = f" / {self.cards} chips" if self.cards != self.boards else ""
        text = f"{self.boards} {unit}{chips} ({', '.join(self.names)})"
        text += f", {self.memory_used_mb} of {self.memory_total_mb} MB in use"
        if self.processes:
            text += f", {self.processes} processes"
        return text + (f", unhealthy: {', '.join(self.unhealthy)}" if self.unhealthy else "")


@dataclass(frozen=True)
class DeviceReport:
    """The parsed output of one tool on one host."""

    accelerators: tuple[Accelerator, ...]
    processes: tuple[DeviceProcess, ...] = ()
    tool_version: str | None = None

    @property
    def summary(self) -> Summary:
        return summarize(self.accelerators, self.processes, self.tool_version)


def summarize(
    accels: tuple[Accelerator, ...] | list[Accelerator],
    processes: tuple[DeviceProcess, ...] = (),
    tool_version: str | None = None,
) -> Summary:
    return Summary(
        kind=accels[0].kind if accels else None,
        cards=len(accels),
        boards=len({a.index for a in accels}),
        names=tuple(dict.fromkeys(a.name for a in accels)),
        memory_total_mb=sum(a.memory_total_mb or 0 for a in accels),
        memory_used_mb=sum(a.memory_used_mb or 0 for a in accels),
        unhealthy=tuple(a.label for a in accels if a.health not in (None, "OK")),
        processes=len(processes),
        tool_version=tool_version,
    )


# ------------------------------------------------------------------ npu-smi info


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return None
    return [cell.strip() for cell in line[1:-1].split("|")]


def parse_npu_smi(text: str) -> DeviceReport:
    """Parse `npu-smi info` (A3 two chips per NPU, or A2 one) into cards and processes."""
    accels: list[Accelerator] = []
    processes: list[DeviceProcess] = []
    version_match = _NPU_SMI_VERSION.search(text)
    in_processes = False
    name_row: list[str] | None = None
    for line in text.splitlines():
        cells = _cells(line)
        if cells is None:
            continue
        if cells[0].startswith(("NPU ", "Chip ")) or cells[0] in ("NPU", "Chip"):
            in_processes = in_processes or any(c.startswith("Process id") for c in cells)
            continue
        if in_processes:
            processes += _process_row(cells)
        elif len(cells) == 3 and _BUS_ID.match(cells[1]) and name_row is not None:
            accels.append(_chip(name_row, cells))
            name_row = None
        elif len(cells) == 3 and cells[0][:1].isdigit():
            name_row = cells
    version = version_match.group(1) if version_match else None
    return DeviceReport(tuple(accels), tuple(processes), version)


def _chip(name_row: list[str], chip_row: list[str]) -> Accelerator:
    index, _, name = name_row[0].partition(" ")
    ids = [int(part) for part in chip_row[0].split() if part.isdigit()]
    pairs = _USED_TOTAL.findall(chip_row[2])
    used, total = (int(pairs[-1][0]), int(pairs[-1][1])) if pairs else (None, None)
    return Accelerator(
        index=int(index),
        chip=ids[0] if ids else 0,
        name=name.strip(),
        memory_total_mb=total,
        memory_used_mb=used,
        health=name_row[1] or None,
        kind="npu",
        phy_id=ids[1] if len(ids) > 1 else None,
        bus_id=chip_row[1],
    )


def _process_row(cells: list[str]) -> list[DeviceProcess]:
    ids = cells[0].split()
    if len(cells) != 4 or len(ids) != 2 or not all(i.isdigit() for i in ids):
        return []  # "No running processes found in NPU n", separators
    if not cells[1].isdigit():
        return []
    memory = int(cells[3]) if cells[3].isdigit() else None
    return [DeviceProcess(int(ids[0]), int(ids[1]), int(cells[1]), cells[2], memory)]


# ------------------------------------------------------------------ nvidia-smi

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.used",
    "--format=csv,noheader,nounits",
]


def parse_nvidia_smi(text: str) -> DeviceReport:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.used` CSV (no units)."""
    accels = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        name = ", ".join(fields[1:-2])  # a name could hold a comma; the numbers cannot
        accels.append(
            Accelerator(
                index=int(fields[0]),
                chip=0,
                name=name,
                memory_total_mb=_int_or_none(fields[-2]),
                memory_used_mb=_int_or_none(fields[-1]),
                health=None,
                kind="gpu",
            )
        )
    return DeviceReport(tuple(accels))


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None  # "[N/A]", "[Not Supported]"


# ------------------------------------------------------------------ need


def compare_with_need(
    accels: tuple[Accelerator, ...] | list[Accelerator],
    need_cards: int,
    min_free_mb: int | None = None,
) -> list[str]:
    """Problems that stop `need_cards` ranks from starting on this host; [] if none.

    The engine takes the first `need_cards` devices in listing order (no
    ASCEND_RT_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES mask assumed), so only those are
    checked for health and free memory.
    """
    if not accels:
        return [f"no accelerators found; need {need_cards} cards"]
    problems = []
    unit = {"gpu": "GPUs", "npu": "NPUs"}[accels[0].kind]
    unit = "NPU chips" if any(a.phy_id is not None for a in accels) else unit
    if len(accels) < need_cards:
        problems.append(f"need {need_cards} cards, found {len(accels)} {unit}")
    for accel in list(accels)[:need_cards]:
        if accel.health not in (None, "OK"):
            problems.append(f"{accel.label}: health is {accel.health}")
        free = accel.memory_free_mb
        if min_free_mb is not None and free is not None and free < min_free_mb:
            problems.append(
                f"{accel.label}: {free} MB free of {accel.memory_total_mb} MB "
                f"({accel.memory_used_mb} MB in use), need {min_free_mb} MB"
            )
    return problems
