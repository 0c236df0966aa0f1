"""Preflight (`toolkit check`): the pure parts, which need no SSH.

- `engine_options`: which flags the installed engine accepts, read statically from its
  source with `ast` (`_pysource`), never by importing it.
- `flags`: what a planned argv gets wrong against those flags (unknown, renamed, removed,
  abbreviated, ambiguous, bad choice), and the argv with known renames applied.
- `accelerators`: `npu-smi info` / `nvidia-smi` output parsed into cards, compared with
  what the plan needs.
- `check_plan`, `check_facts`, `check_rules`, `check_cluster`, `check_flags`: what the check
  derives from the plan, its values, and the judging of each host's facts (gathered by the
  agent's `host_facts` module, `toolkit/host/probe.py`).
"""

from __future__ import annotations

from toolkit.preflight.accelerators import (
    Accelerator,
    DeviceReport,
    Summary,
    compare_with_need,
    parse_npu_smi,
    parse_nvidia_smi,
)
from toolkit.preflight.flags import (
    Change,
    EngineArgument,
    EngineOptions,
    FlagFinding,
    Rename,
    Renames,
    check_argv,
    extract_sglang_options,
    extract_vllm_options,
    load_renames,
    translate_argv,
)

__all__ = [
    "Accelerator",
    "Change",
    "DeviceReport",
    "EngineArgument",
    "EngineOptions",
    "FlagFinding",
    "Rename",
    "Renames",
    "Summary",
    "check_argv",
    "compare_with_need",
    "extract_sglang_options",
    "extract_vllm_options",
    "load_renames",
    "parse_npu_smi",
    "parse_nvidia_smi",
    "translate_argv",
]
