"""Seeds 000, 001, 002 and 004 → profiles: every planned launch is the recipe's command.

Each recipe command is written out below as shell text (seed 001 and 002 verbatim; seed
004 as its launch.sh assembles it with the defaults; seed 000 as derived from the seed's
text, which prints no command). The test parses it into environment, engine module and
flag → values (order-insensitive) and compares that with the argv and env toolkit plans.
The corrections a profile documents are explicit edits of the recipe's command here.
When ../shared/seeds is present, the verbatim commands are also found in their seed file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.test_planner import with_image
from toolkit.inventory import parse_inventory
from toolkit.plan import Plan
from toolkit.planner import build_plan
from toolkit.profiles import load_profile

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
ENGINE_MODULES = {
    "sglang": ("sglang.launch_server",),
    "vllm": ("vllm.entrypoints.cli.main", "serve"),
}
# Flags that belong to where a benchmark points, not to its dataset shape.
BENCH_TARGET = ("--host", "--port", "--tokenizer")

MIXED_INVENTORY = """
all:
  children:
    mixed:
      hosts:
        gpu1: {ansible_host: 10.0.0.1}
"""
PD_INVENTORY = """
all:
  children:
    prefill:
      hosts:
        p1: {ansible_host: 10.0.1.1}
    decode:
      hosts:
        d1: {ansible_host: 10.0.2.1}
        d2: {ansible_host: 10.0.2.2}
        d3: {ansible_host: 10.0.2.3}
        d4: {ansible_host: 10.0.2.4}
"""


@dataclass(frozen=True)
class Command:
    """A recipe command: environment, engine (module + subcommand), positionals, flags."""

    env: dict[str, str]
    module: tuple[str, ...]
    positionals: tuple[str, ...]
    flags: dict[str, tuple[str, ...]]


def parse_command(text: str, replace: Mapping[str, list[str]] | None = None) -> Command:
    """`A=1 \\ python3 -m sglang.launch_server --x 1` or `vllm serve M --x 1` → Command."""
    tokens = shlex.split(text.replace("\\\n", " "))
    for old, new in (replace or {}).items():
        at = tokens.index(old)
        tokens[at : at + 1] = new
    env: dict[str, str] = {}
    while tokens[0] == "export" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        token = tokens.pop(0)
        if token != "export":
            name, _, value = token.partition("=")
            env[name] = value
    if tokens[0] == "vllm":
        module, rest = ENGINE_MODULES["vllm"], tokens[2:]
    else:
        assert tokens[0] in ("python", "python3") and tokens[1] == "-m", tokens[:2]
        module, rest = (tokens[2],), tokens[3:]
    first_flag = next(i for i, t in enumerate(rest) if t.startswith("-"))
    return Command(env, module, tuple(rest[:first_flag]), flag_map(rest[first_flag:]))


def flag_map(tokens: list[str]) -> dict[str, tuple[str, ...]]:
    """`M --a 1 --b --c x y` → {"--a": ("1",), "--b": (), "--c": ("x", "y")}.

    Tokens before the first flag (interpreter, module, positional model) are skipped; a
    flag may appear once, and a single-dash token is refused rather than taken as a value.
    """
    flags: dict[str, tuple[str, ...]] = {}
    current: str | None = None
    for token in tokens:
        if token.startswith("--"):
            assert token not in flags, f"{token} appears twice"
            flags[token], current = (), token
        elif current is not None:
            assert not token.startswith("-"), f"unexpected short option {token}"
            flags[current] += (token,)
    return flags


def _normalized(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


# --------------------------------------------------------------------------- seed 001
# Verbatim from 001_*.txt, "Model-Specific Launch Commands" and "EAGLE Speculative Decoding".

QWEN35_BASELINE = """\
SGLANG_DISABLE_DEEP_GEMM=1 \\
NCCL_IB_DISABLE=1 \\
NCCL_P2P_LEVEL=PHB \\
OMP_NUM_THREADS=8 \\
SAFETENSORS_FAST_GPU=1 \\
python -m sglang.launch_server \\
--model-path nvidia/Qwen3.5-397B-A17B-NVFP4 \\
--tp-size 4 \\
--host 0.0.0.0 --port 8000 \\
--trust-remote-code \\
--mem-fraction-static 0.85 \\
--quantization modelopt_fp4 \\
--attention-backend triton \\
--moe-runner-backend flashinfer_cutlass \\
--fp4-gemm-backend flashinfer_cudnn \\
--context-length 262144 \\
--reasoning-parser qwen3 \\
--tool-call-parser qwen3_coder \\
--sleep-on-idle
"""

QWEN35_MTP = """\
NCCL_P2P_LEVEL=4 \\
SGLANG_ENABLE_SPEC_V2=1 \\
python3 -m sglang.launch_server \\
--model-path nvidia/Qwen3.5-397B-A17B-NVFP4 \\
--tp 4 \\
--trust-remote-code \\
--attention-backend flashinfer \\
--moe-runner-backend flashinfer_cutlass \\
--kv-cache-dtype fp8_e4m3 \\
--tool-call-parser qwen3 \\
--reasoning-parser qwen3 \\
--quantization modelopt_fp4 \\
--enable-pcie-oneshot-allreduce \\
--mem-fraction-static 0.9 \\
--cuda-graph-max-bs 8 \\
--host 0.0.0.0 --port 5000 \\
--served-model-name qwen3.5 \\
--max-running-requests 8 \\
--fp8-gemm-backend triton \\
--model-loader-extra-config '{"enable_multithread_load": true, "num_threads": 16}' \\
--sleep-on-idle
"""

QWEN35_MTP_TP8 = """\
export SGLANG_ENABLE_SPEC_V2=True
python3 -m sglang.launch_server \\
--model nvidia/Qwen3.5-397B-A17B-NVFP4 \\
--served-model-name Qwen3.5 \\
--reasoning-parser qwen3 \\
--tool-call-parser qwen3_coder \\
--tensor-parallel-size 8 \\
--quantization modelopt_fp4 \\
--kv-cache-dtype fp8_e4m3 \\
--trust-remote-code \\
--attention-backend triton \\
--moe-runner-backend flashinfer_cutlass \\
--fp4-gemm-backend flashinfer_cudnn \\
--cuda-graph-max-bs 4 \\
--max-running-requests 4 \\
--context-length 262144 \\
--chunked-prefill-size 32768 \\
--speculative-algo NEXTN --speculative-num-steps 3 --speculative-eagle-topk 1 \
--speculative-num-draft-tokens 4 \\
--mamba-scheduler-strategy extra_buffer \\
--page-size 64 \\
--mem-fraction-static 0.85 \\
--sleep-on-idle \\
--host 0.0.0.0 --port 8000
"""

QWEN35_FP8_TP8 = """\
python -m sglang.launch_server \\
--model-path /home/gpusvr/Qwen3.5-397B-A17B-FP8 \\
--host 0.0.0.0 --port 9501 \\
--tp-size 8 \\
--mem-fraction-static 0.8 \\
--context-length 262144 \\
--reasoning-parser qwen3 \\
--tool-call-parser qwen3_coder \\
--served-model-name llm_model \\
--speculative-algo NEXTN \\
--speculative-num-steps 3 \\
--speculative-eagle-topk 1 \\
--speculative-num-draft-tokens 4 \\
--attention-backend triton \\
--fp8-gemm-backend triton \\
--moe-runner-backend triton \\
--sleep-on-idle
"""

KIMI_K25 = """\
NCCL_P2P_LEVEL=4 \\
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \\
SGL_ENABLE_JIT_DEEPGEMM=0 \\
python -m sglang.launch_server \\
--model moonshotai/Kimi-K2.5 \\
--tp 8 \\
--host 0.0.0.0 --port 5000 \\
--mem-fraction-static 0.94 \\
--enable-metrics \\
--sleep-on-idle \\
--attention-backend flashinfer \\
--tool-call-parser kimi_k2 \\
--reasoning-parser kimi_k2 \\
--served-model-name kimi-k2.5 \\
--chunked-prefill-size 8092 \\
--cuda-graph-max-bs 16 \\
--model-loader-extra-config '{"enable_multithread_load": true, "num_threads": 16}' \\
--trust-remote-code \\
--enable-mixed-chunk
"""

KIMI_K25_NVFP4 = """\
NCCL_P2P_LEVEL=4 python -m sglang.launch_server \\
--model-path nvidia/Kimi-K2.5-NVFP4 \\
--tensor-parallel-size 8 \\
--trust-remote-code \\
--reasoning-parser kimi_k2 \\
--tool-call-parser kimi_k2 \\
--moe-runner-backend triton \\
--quantization modelopt_fp4 \\
--model-loader-extra-config '{"enable_multithread_load": true,"num_threads": 119}' \\
--mem-fraction-static 0.93 \\
--cuda-graph-max-bs 8 \\
--sleep-on-idle
"""

GLM5_MTP = """\
SGLANG_ENABLE_SPEC_V2=True \\
SGLANG_ENABLE_JIT_DEEPGEMM=0 \\
SGLANG_ENABLE_DEEP_GEMM=0 \\
NCCL_GRAPH_FILE=/mnt/nccl_graph_opt.xml \\
NCCL_IB_DISABLE=1 \\
NCCL_P2P_LEVEL=SYS \\
NCCL_ALLOC_P2P_NET_LL_BUFFERS=1 \\
NCCL_MIN_NCHANNELS=8 \\
OMP_NUM_THREADS=8 \\
SAFETENSORS_FAST_GPU=1 \\
python3 -m sglang.launch_server \\
--model-path /mnt/GLM-5-NVFP4-MTP \\
--tp 8 \\
--trust-remote-code \\
--attention-backend flashinfer \\
--moe-runner-backend cutlass \\
--kv-cache-dtype bf16 \\
--tool-call-parser glm47 \\
--reasoning-parser glm45 \\
--quantization modelopt_fp4 \\
--enable-pcie-oneshot-allreduce \\
--mem-fraction-static 0.85 \\
--cuda-graph-max-bs 32 \\
--host 0.0.0.0 --port 5000 \\
--served-model-name glm-5 \\
--max-running-requests 64 \\
--model-loader-extra-config '{"enable_multithread_load": true, "num_threads": 8}' \\
--speculative-algorithm NEXTN \\
--speculative-num-steps 3 \\
--speculative-num-draft-tokens 4 \\
--speculative-eagle-topk 1 \\
--enable-metrics \\
--sleep-on-idle
"""

GLM5_NO_MTP = """\
NCCL_GRAPH_FILE=/mnt/nccl_graph_opt.xml \\
NCCL_IB_DISABLE=1 \\
NCCL_P2P_LEVEL=SYS \\
NCCL_ALLOC_P2P_NET_LL_BUFFERS=1 \\
NCCL_MIN_NCHANNELS=8 \\
OMP_NUM_THREADS=8 \\
SAFETENSORS_FAST_GPU=1 \\
python3 -m sglang.launch_server \\
--model-path lukealonso/GLM-5-NVFP4 \\
--tp 8 \\
--trust-remote-code \\
--attention-backend flashinfer \\
--moe-runner-backend flashinfer_cutlass \\
--kv-cache-dtype bf16 \\
--tool-call-parser glm47 \\
--reasoning-parser glm45 \\
--quantization modelopt_fp4 \\
--enable-pcie-oneshot-allreduce \\
--mem-fraction-static 0.9 \\
--cuda-graph-max-bs 8 \\
--host 0.0.0.0 --port 5000 \\
--served-model-name glm-5 \\
--max-running-requests 8 \\
--model-loader-extra-config '{"enable_multithread_load": true, "num_threads": 8}' \\
--sleep-on-idle
"""

QWEN35_EAGLE = """\
SGLANG_ENABLE_SPEC_V2=1 python3 -m sglang.launch_server \\
--model-path nvidia/Qwen3.5-397B-A17B-NVFP4 \\
--tp 4 \\
--trust-remote-code \\
--attention-backend triton \\
--moe-runner-backend cutlass \\
--kv-cache-dtype fp8_e4m3 \\
--tool-call-parser qwen3_coder \\
--reasoning-parser qwen3 \\
--quantization modelopt_fp4 \\
--mamba-scheduler-strategy extra_buffer \\
--fp8-gemm-backend triton \\
--speculative-algorithm EAGLE \\
--speculative-num-steps 3 \\
--speculative-eagle-topk 1 \\
--speculative-num-draft-tokens 4 \\
--model-loader-extra-config '{"enable_multithread_load": true, "num_threads": 16}' \\
--sleep-on-idle
"""

# Seed 001 has no benchmark: toolkit's default shape (_rtx6000.yaml).
BENCH_001 = {
    "--backend": ("sglang",),
    "--dataset-name": ("random",),
    "--random-input-len": ("1024",),
    "--random-output-len": ("512",),
    "--random-range-ratio": ("1",),
    "--max-concurrency": ("4",),
    "--num-prompts": ("32",),
}

# --------------------------------------------------------------------------- seed 002
# Verbatim from 002_*.txt (after the `$ ` prompt).

GLM5_FP8_VLLM = """\
vllm serve zai-org/GLM-5-FP8 \\
--tensor-parallel-size 8 \\
--max-model-len 32768 \\
--gpu-memory-utilization 0.90 \\
--trust-remote-code
"""

GLM5_NVFP4_VLLM = """\
vllm serve lukealonso/GLM-5-NVFP4 \\
--tensor-parallel-size 4 \\
--max-model-len 32768 \\
--gpu-memory-utilization 0.90 \\
--trust-remote-code
"""

# "2048 input tokens, 512 output tokens, random dataset"; the table sweeps concurrency
# 1..1024 and the profile's single run sits at its saturation point, 128.
BENCH_002 = {
    "--backend": ("vllm",),
    "--dataset-name": ("random",),
    "--random-input-len": ("2048",),
    "--random-output-len": ("512",),
    "--random-range-ratio": ("1",),
    "--max-concurrency": ("128",),
    "--num-prompts": ("1280",),
}

# --------------------------------------------------------------------------- seed 004
# Not printed by the seed (a README with a settings table): the command launch.sh runs at
# github.com/0xSero/glm-5.2-sm120 commit 579d78b with its defaults (ENABLE_THINKING=1,
# MTP=1, DCP_SIZE=4), and the environment it passes into the container, minus the JIT-cache
# directories of its Docker volume and the variables it only uses to build the command.

INDEX_TOPK_PATTERN = (
    "FFFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSSFSSS"
)
GLM52_MODEL = "/mnt/llm_models/GLM-5.2-NVFP4-REAP-469B"
GLM52_REAP = f"""\
CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0,1,2,3 OMP_NUM_THREADS=16 \\
CUTE_DSL_ARCH=sm_120a CUDA_DEVICE_MAX_CONNECTIONS=32 NCCL_P2P_LEVEL=SYS NCCL_P2P_DISABLE=1 \\
NCCL_SHM_DISABLE=0 NCCL_PROTO=LL,LL128,Simple NCCL_IB_DISABLE=1 USE_NCCL_XML=0 \\
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True SAFETENSORS_FAST_GPU=1 \\
VLLM_WORKER_MULTIPROC_METHOD=spawn VLLM_USE_B12X_SPARSE_INDEXER=1 VLLM_USE_B12X_MOE=1 \\
VLLM_USE_V2_MODEL_RUNNER=1 VLLM_USE_FLASHINFER_SAMPLER=1 VLLM_USE_B12X_FP8_GEMM=1 \\
VLLM_ENABLE_PCIE_ALLREDUCE=0 VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0 \\
VLLM_DISABLED_KERNELS=MarlinFP8ScaledMMLinearKernel USES_B12X=True \\
B12X_DENSE_SPLITK_TURBO=1 B12X_W4A16_TC_DECODE=1 B12X_MOE_FORCE_A16=1 \\
vllm serve {GLM52_MODEL} \\
  --served-model-name glm-5.2 GLM-5.2-NVFP4-REAP-469B GLM-5.2 \\
  --trust-remote-code \\
  --host 0.0.0.0 \\
  --port 8000 \\
  --tensor-parallel-size 4 \\
  --pipeline-parallel-size 1 \\
  --decode-context-parallel-size 4 \\
  --enable-chunked-prefill \\
  --enable-prefix-caching \\
  --load-format fastsafetensors \\
  --async-scheduling \\
  -cc.pass_config.fuse_allreduce_rms=True \\
  --gpu-memory-utilization 0.95 \\
  --max-num-batched-tokens 8192 \\
  --max-num-seqs 2 \\
  --max-cudagraph-capture-size 8 \\
  --max-model-len 250000 \\
  --quantization modelopt_fp4 \\
  --attention-backend B12X_MLA_SPARSE \\
  --moe-backend b12x \\
  --kv-cache-dtype fp8 \\
  --tool-call-parser glm47 \\
  --enable-auto-tool-choice \\
  --reasoning-parser glm45 \\
  --hf-overrides '{{"index_topk_pattern":"{INDEX_TOPK_PATTERN}"}}' \\
  --chat-template /recipe/chat_template.think.jinja \\
  --speculative-config '{{"model":"{GLM52_MODEL}","method":"mtp","num_speculative_tokens":3,\
"moe_backend":"b12x","draft_sample_method":"probabilistic"}}'
"""
# The profile's documented corrections to that command.
GLM52_REPLACE = {
    # toolkit emits only --flags: the long, dotted spelling of the same vLLM option.
    "-cc.pass_config.fuse_allreduce_rms=True": [
        "--compilation-config.pass_config.fuse_allreduce_rms",
        "True",
    ],
}
GLM52_FLAGS = {
    # A file of the recipe repository, mounted into its container: not passed.
    "--chat-template": None,
    # "model" dropped: vLLM's mtp method drafts from the served model (follows model_path).
    "--speculative-config": (
        '{"method":"mtp","num_speculative_tokens":3,"moe_backend":"b12x",'
        '"draft_sample_method":"probabilistic"}',
    ),
}
GLM52_UNSET = ["NCCL_GRAPH_FILE", "NCCL_GRAPH_DUMP_FILE", "VLLM_B12X_MLA_EXTEND_MAX_CHUNKS"]
BENCH_004 = {
    "--backend": ("vllm",),
    "--dataset-name": ("random",),
    "--random-input-len": ("8192",),
    "--random-output-len": ("1024",),
    "--random-range-ratio": ("1",),
    "--max-concurrency": ("2",),
    "--num-prompts": ("8",),
}


@dataclass(frozen=True)
class Case:
    """One single-node launch: its profile, the recipe command and the planned changes."""

    profile: str
    seed: str
    command: str
    bench: dict[str, tuple[str, ...]]
    # True when `command` is printed verbatim in the seed file.
    verbatim: bool = True
    replace: dict[str, list[str]] = field(default_factory=dict)
    # Corrections: flag → new values, or None to drop the flag.
    flags: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    unset_env: list[str] = field(default_factory=list)

    @property
    def corrected(self) -> bool:
        return bool(self.flags or self.env or self.replace)


MIXED_CASES = [
    Case("rtx6000-glm5-nvfp4-mtp", "001", GLM5_MTP, BENCH_001),
    Case("rtx6000-glm5-nvfp4", "001", GLM5_NO_MTP, BENCH_001),
    Case("rtx6000-qwen35-nvfp4", "001", QWEN35_BASELINE, BENCH_001),
    Case(
        "rtx6000-qwen35-nvfp4-mtp",
        "001",
        QWEN35_MTP,
        BENCH_001,
        # Correction: "With MTP" sets SGLANG_ENABLE_SPEC_V2 but passes no speculative flags;
        # added from the seed's MTP section.
        flags={
            "--speculative-algorithm": ("NEXTN",),
            "--speculative-num-steps": ("3",),
            "--speculative-num-draft-tokens": ("4",),
            "--speculative-eagle-topk": ("1",),
        },
    ),
    Case("rtx6000-qwen35-nvfp4-mtp-tp8", "001", QWEN35_MTP_TP8, BENCH_001),
    Case(
        "rtx6000-qwen35-fp8-tp8",
        "001",
        QWEN35_FP8_TP8,
        BENCH_001,
        # Correction: NEXTN without SGLANG_ENABLE_SPEC_V2, which the seed calls mandatory.
        env={"SGLANG_ENABLE_SPEC_V2": "True"},
    ),
    Case("rtx6000-qwen35-nvfp4-eagle", "001", QWEN35_EAGLE, BENCH_001),
    Case("rtx6000-kimi-k25", "001", KIMI_K25, BENCH_001),
    Case("rtx6000-kimi-k25-nvfp4", "001", KIMI_K25_NVFP4, BENCH_001),
    Case("b200-glm5-fp8-vllm", "002", GLM5_FP8_VLLM, BENCH_002),
    Case("b200-glm5-nvfp4-vllm", "002", GLM5_NVFP4_VLLM, BENCH_002),
    Case(
        "rtxpro6000-glm52-reap-vllm",
        "004",
        GLM52_REAP,
        BENCH_004,
        verbatim=False,
        replace=GLM52_REPLACE,
        flags=GLM52_FLAGS,
        unset_env=GLM52_UNSET,
    ),
    Case(
        "rtxpro6000-glm52-reap-vllm-dcp1",
        "004",
        # .env: DCP_SIZE=1 MAX_MODEL_LEN=131072.
        GLM52_REAP.replace(
            "--decode-context-parallel-size 4", "--decode-context-parallel-size 1"
        ).replace("--max-model-len 250000", "--max-model-len 131072"),
        BENCH_004,
        verbatim=False,
        replace=GLM52_REPLACE,
        flags=GLM52_FLAGS,
        unset_env=GLM52_UNSET,
    ),
]

VERBATIM_CASES = [c for c in MIXED_CASES if c.verbatim]


def _seed_text(seed: str) -> str | None:
    found = sorted(SEEDS.glob(f"{seed}_*.txt")) if SEEDS.is_dir() else []
    return found[0].read_text() if found else None


def _plan(profile: str, inventory: str) -> Plan:
    profile_data = load_profile(profile, with_image(profile))
    return build_plan(parse_inventory(inventory, "inv.yaml"), profile_data)


def _expected(case: Case) -> Command:
    recipe = parse_command(case.command, case.replace)
    flags = dict(recipe.flags)
    for flag, values in case.flags.items():
        if values is None:
            assert flags.pop(flag, None) is not None, f"{flag} is not in the recipe"
        else:
            flags[flag] = values
    return Command({**recipe.env, **case.env}, recipe.module, recipe.positionals, flags)


def _bench_shape(plan: Plan) -> dict[str, tuple[str, ...]]:
    flags = flag_map(plan.bench.argv)
    return {k: v for k, v in flags.items() if k not in BENCH_TARGET}


def test_cases_are_listed() -> None:
    assert MIXED_CASES and VERBATIM_CASES and PD_CASES
    names = [c.profile for c in MIXED_CASES] + [c.profile for c in PD_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", MIXED_CASES, ids=[c.profile for c in MIXED_CASES])
def test_launch_is_the_recipe_command(case: Case) -> None:
    profile = load_profile(case.profile)
    assert profile.meta.seed.startswith(f"{case.seed}_")
    assert profile.meta.seed_section and profile.meta.title
    # Every correction is recorded where `toolkit plan` shows it.
    assert bool(profile.meta.corrections) == case.corrected
    plan = _plan(case.profile, MIXED_INVENTORY)
    (node,) = plan.nodes
    expected = _expected(case)

    python, dash_m, *engine = node.argv[: 2 + len(expected.module)]
    assert (python, dash_m, tuple(engine)) == ("python3", "-m", expected.module)
    assert ENGINE_MODULES[profile.engine] == expected.module
    rest = node.argv[2 + len(expected.module) :]
    assert tuple(rest[: len(expected.positionals)]) == expected.positionals
    assert flag_map(rest) == expected.flags
    assert node.env == expected.env
    assert node.unset_env == case.unset_env

    assert _bench_shape(plan) == case.bench
    bench = flag_map(plan.bench.argv)
    assert bench["--port"] == (str(node.port),)
    assert bench["--tokenizer"] == (plan.model_path,)


@pytest.mark.parametrize("case", VERBATIM_CASES, ids=[c.profile for c in VERBATIM_CASES])
def test_recipe_command_is_verbatim_from_the_seed(case: Case) -> None:
    text = _seed_text(case.seed)
    if text is None:
        pytest.skip("../shared/seeds is not present")
    assert _normalized(case.command) in _normalized(text)


def test_glm52_index_pattern_is_the_one_the_seed_describes() -> None:
    # "The 78-char F/S string (21 F, 57 S) is derived from the model's indexer_types."
    assert len(INDEX_TOPK_PATTERN) == 78
    assert (INDEX_TOPK_PATTERN.count("F"), INDEX_TOPK_PATTERN.count("S")) == (21, 57)


def test_rtx6000_cpu_tuning_is_off_but_one_override_away() -> None:
    # The seed's tuning tips are recommendations outside the commands: not applied.
    assert all(not load_profile(c.profile).tuning.cpu_governor for c in MIXED_CASES)
    tuned = load_profile(
        "rtx6000-glm5-nvfp4-mtp",
        [
            "tuning.cpu_governor=performance",
            "tuning.sysctl={vm.swappiness: 0, kernel.numa_balancing: 0,"
            " kernel.sched_migration_cost_ns: 50000}",
            "env.SGLANG_SET_CPU_AFFINITY=1",
        ],
    )
    assert tuned.tuning.cpu_governor == "performance"
    assert tuned.tuning.sysctl == {
        "vm.swappiness": 0,
        "kernel.numa_balancing": 0,
        "kernel.sched_migration_cost_ns": 50000,
    }
    assert tuned.env["SGLANG_SET_CPU_AFFINITY"] == 1


# --------------------------------------------------------------------------- seed 000
# The seed prints no command line (it lives in the deploy.yaml it links to). Flags derived
# from its text: TP4 prefill; TP16/DP16/EP16 decode (attention DP); modelopt NVFP4; FP8 KV;
# NIXL; EAGLE MTP on decode (numbers from an earlier revision of that manifest).

GB200_PREFILL = """\
python3 -m sglang.launch_server --model-path nvidia/GLM-5-NVFP4 --tp-size 4 \
--quantization modelopt_fp4 --kv-cache-dtype fp8_e4m3 --disaggregation-transfer-backend nixl
"""
GB200_DECODE = """\
python3 -m sglang.launch_server --model-path nvidia/GLM-5-NVFP4 --tp-size 16 --dp-size 16 \
--ep-size 16 --enable-dp-attention --quantization modelopt_fp4 --kv-cache-dtype fp8_e4m3 \
--disaggregation-transfer-backend nixl --speculative-algorithm EAGLE \
--speculative-num-steps 2 --speculative-eagle-topk 1 --speculative-num-draft-tokens 3
"""
GB200_ENV = {
    "SGLANG_ENABLE_SPEC_V2": "1",
    "SGLANG_NVFP4_CKPT_FP8_NEXTN_MOE": "1",
    "FLASHINFER_WORKSPACE_BASE": "/model-store",
}
# ISL 1000 / OSL 8192 / concurrency 512 / 1,536 requests (AIPerf in the recipe).
BENCH_000 = {
    "--backend": ("sglang",),
    "--dataset-name": ("random",),
    "--random-input-len": ("1000",),
    "--random-output-len": ("8192",),
    "--random-range-ratio": ("1",),
    "--max-concurrency": ("512",),
    "--num-prompts": ("1536",),
}


@dataclass(frozen=True)
class PdCase:
    profile: str
    transport_env: dict[str, str]


PD_CASES = [
    PdCase("gb200-glm5-nvfp4-1p4d", {"UCX_TLS": "cuda_copy,cuda_ipc,tcp"}),
    PdCase("gb200-glm5-nvfp4-1p4d-efa", {"SGLANG_DISAGGREGATION_NIXL_BACKEND": "LIBFABRIC"}),
]


@pytest.mark.parametrize("case", PD_CASES, ids=[c.profile for c in PD_CASES])
def test_gb200_1p4d_launches_the_recipe_topology(case: PdCase) -> None:
    profile = load_profile(case.profile)
    assert profile.meta.seed.startswith("000_")
    assert profile.meta.target_tpot_ms is None and profile.meta.corrections
    plan = _plan(case.profile, PD_INVENTORY)
    prefill = [n for n in plan.nodes if n.role == "prefill"]
    decode = [n for n in plan.nodes if n.role == "decode"]
    assert [n.address for n in prefill] == ["10.0.1.1"]
    assert [n.node_rank for n in decode] == [0, 1, 2, 3]

    for node in plan.nodes:
        role = parse_command(GB200_PREFILL if node.role == "prefill" else GB200_DECODE)
        assert node.argv[:3] == ["python3", "-m", *role.module]
        topology = {
            "--disaggregation-mode": (node.role,),
            "--host": (node.address,),
        }
        if node.role == "prefill":
            topology["--disaggregation-bootstrap-port"] = ("8998",)
        else:
            topology["--dist-init-addr"] = ("10.0.2.1:5000",)
            topology["--node-rank"] = (str(node.node_rank),)
            topology["--nnodes"] = ("4",)
        assert flag_map(node.argv) == {**role.flags, **topology}, node.name
        assert node.env == {**GB200_ENV, **case.transport_env}, node.name
        assert node.nic_env == ["NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"]

    assert plan.router is not None
    router = plan.router.argv
    assert router[1:4] == ["-m", "sglang_router.launch_router", "--pd-disaggregation"]
    assert router[router.index("--prefill") + 1 :][:2] == ["http://10.0.1.1:30000", "8998"]
    assert router[router.index("--decode") + 1] == "http://10.0.2.1:30000"
    assert router[router.index("--policy") + 1] == "round_robin"
    assert router[router.index("--port") + 1] == "8000"

    assert _bench_shape(plan) == BENCH_000
    assert flag_map(plan.bench.argv)["--port"] == ("8000",)
