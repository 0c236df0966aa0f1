"""The `devices` row of `toolkit check`: is each planned GPU/NPU really free to start on?

The usual cause of an OOM at start is a device still held by a previous job. From a real
`nvidia-smi` (two CSV queries the probe runs: `GPU_STATE_ARGS`, `GPU_APPS_ARGS`) this names
the processes holding memory on a planned GPU (pid and command line), compares free memory
with what the profile's memory fraction takes (`--mem-fraction-static` for sglang,
`--gpu-memory-utilization` for vLLM, 0.9 by default there), and reports uncorrected ECC
errors and persistence mode. On Ascend, `npu-smi info` has the process table and HBM use,
but no ECC or persistence columns: those are said to be unknown, not guessed.

Pure: facts in, one `Finding` per host out, tested from fixtures of real output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolkit.plan import NodePlan, Plan
from toolkit.preflight.accelerators import parse_npu_smi
from toolkit.preflight.check_facts import Finding
from toolkit.preflight.check_plan import cards_per_node

FRACTION_FLAGS = {"sglang": "--mem-fraction-static", "vllm": "--gpu-memory-utilization"}
DEFAULT_FRACTION = {"vllm": 0.9}  # sglang sizes its default from the GPU: not guessed here


@dataclass(frozen=True)
class GpuState:
    index: int
    uuid: str
    total_mb: int | None
    used_mb: int | None
    free_mb: int | None
    persistence: str  # "Enabled", "Disabled", "[N/A]"
    ecc_mode: str
    ecc_uncorrected: int | None


@dataclass(frozen=True)
class Holder:
    """A process holding memory on a device."""

    device: str  # GPU uuid, or "NPU i chip c"
    pid: int
    name: str
    used_mb: int | None
    command: str = ""


def _num(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None  # "[N/A]", "[Not Supported]"


def parse_gpu_state(text: str) -> list[GpuState]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,memory.total,memory.used,memory.free,
    persistence_mode,ecc.mode.current,ecc.errors.uncorrected.volatile.total` (CSV, no units)."""
    out = []
    for line in text.splitlines():
        f = [part.strip() for part in line.split(",")]
        if len(f) >= 8 and f[0].isdigit():
            out.append(
                GpuState(
                    int(f[0]), f[1], _num(f[2]), _num(f[3]), _num(f[4]), f[5], f[6], _num(f[7])
                )
            )
    return out


def parse_gpu_apps(text: str, cmdlines: dict[str, str] | None = None) -> list[Holder]:
    """Rows of `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory`."""
    out = []
    for line in text.splitlines():
        f = [part.strip() for part in line.split(",")]
        if len(f) >= 4 and f[1].isdigit():
            name = ", ".join(f[2:-1])
            command = (cmdlines or {}).get(f[1], "")
            out.append(Holder(f[0], int(f[1]), name, _num(f[-1]), command))
    return out


def memory_fraction(plan: Plan, node: NodePlan) -> float | None:
    flag = FRACTION_FLAGS.get(plan.engine)
    argv = node.argv
    for i, token in enumerate(argv):
        name, eq, inline = token.partition("=")
        if name == flag:
            try:
                return float(inline if eq else argv[i + 1])
            except (IndexError, ValueError):
                return None
    return DEFAULT_FRACTION.get(plan.engine)


def planned_gpus(node: NodePlan, count: int) -> list[int]:
    """GPU indexes the node's ranks take: CUDA_VISIBLE_DEVICES if set, else the first ones."""
    mask = [v.strip() for v in node.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if mask and all(v.isdigit() for v in mask):
        return [int(v) for v in mask[:count]]
    return list(range(count))


def devices(
    plan: Plan, nodes: list[NodePlan], host: str, sections: dict[str, Any]
) -> Finding | None:
    """The `devices` finding for one serving host, or None where no tool answered."""
    node = nodes[0]
    count = sum(cards_per_node(plan, n) for n in nodes)
    fraction = memory_fraction(plan, node)
    if plan.platform == "cuda":
        state = sections.get("gpu_state") or {}
        if not state.get("stdout"):
            return None  # the accel row already says why nvidia-smi gave nothing
        apps = sections.get("gpu_apps") or {}
        holders = parse_gpu_apps(apps.get("stdout") or "", apps.get("cmdlines"))
        return judge_gpus(
            host, parse_gpu_state(state["stdout"]), holders, planned_gpus(node, count), fraction
        )
    npu = sections.get("npu_smi") or {}
    if not npu.get("stdout"):
        return None
    return judge_npus(host, npu["stdout"], count, fraction)


def judge_gpus(
    host: str,
    gpus: list[GpuState],
    holders: list[Holder],
    wanted: list[int],
    fraction: float | None,
) -> Finding:
    by_index = {g.index: g for g in gpus}
    problems, notes = [], []
    for index in wanted:
        gpu = by_index.get(index)
        if gpu is None:
            problems.append(f"GPU {index} is planned but nvidia-smi lists no such GPU")
            continue
        for holder in (h for h in holders if h.device == gpu.uuid):
            what = holder.command or holder.name
            mb = f"{holder.used_mb} MB" if holder.used_mb is not None else "memory"
            problems.append(f"GPU {index}: pid {holder.pid} ({what}) holds {mb}")
        problems += _memory(f"GPU {index}", gpu.total_mb, gpu.free_mb, fraction)
        if gpu.ecc_uncorrected:
            problems.append(f"GPU {index}: {gpu.ecc_uncorrected} uncorrected ECC errors (volatile)")
        if gpu.persistence == "Disabled":
            notes.append(f"GPU {index}: persistence mode is off (each start pays the driver load)")
    return _finding(host, "GPU", wanted, problems, notes, gpus, fraction)


def judge_npus(host: str, text: str, count: int, fraction: float | None) -> Finding:
    report = parse_npu_smi(text)
    planned = list(report.accelerators)[:count]
    problems = []
    for accel in planned:
        for proc in report.processes:
            if (proc.index, proc.chip) == (accel.index, accel.chip):
                mb = f"{proc.memory_mb} MB" if proc.memory_mb is not None else "memory"
                name = f" ({proc.name})" if proc.name else ""
                problems.append(f"{accel.label}: pid {proc.pid}{name} holds {mb}")
        problems += _memory(accel.label, accel.memory_total_mb, accel.memory_free_mb, fraction)
    notes = ["npu-smi info reports no ECC or persistence columns: not checked"]
    wanted = [a.index for a in planned]
    return _finding(host, "NPU", wanted, problems, notes, planned, fraction)


def _memory(label: str, total: int | None, free: int | None, fraction: float | None) -> list[str]:
    if fraction is None or total is None or free is None:
        return []
    need = int(total * fraction)
    if free >= need:
        return []
    return [
        f"{label}: {free} MB free of {total} MB, the memory fraction {fraction:g} needs {need} MB"
    ]


def _finding(
    host: str,
    word: str,
    wanted: list[int],
    problems: list[str],
    notes: list[str],
    found: list[Any],
    fraction: float | None,
) -> Finding:
    if problems:
        fix = (
            "stop the processes named (or pick other devices with the visibility mask), then rerun"
        )
        detail = "; ".join(problems)
        return Finding(
            host, "devices", "failed", f"{len(problems)} problems", detail, fix, tuple(notes)
        )
    share = f", fraction {fraction:g} fits" if fraction is not None else ""
    detail = f"{len(wanted)} planned {word}s free (no other processes{share})"
    return Finding(host, "devices", "ok", f"{len(wanted)} free", detail, notes=tuple(notes))
