"""Flag extraction from engine source, and argv checks/translation against it.

The sglang tests read the sglang installed in this venv (0.5.23) and are skipped without
it; the counts were verified against sglang's real argparse parser (see the report). The
seed 003 argvs are the recipe's exact `launch_server` commands
(tests/fixtures/preflight/seed003_*.sh).
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.engines import SGLANG_DIR
from toolkit.errors import YamlError
from toolkit.preflight.flags import (
    EngineOptions,
    Renames,
    check_argv,
    extract_sglang_options,
    extract_vllm_options,
    load_renames,
    translate_argv,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"
needs_sglang = pytest.mark.skipif(SGLANG_DIR is None, reason="sglang is not installed")


@pytest.fixture(scope="module")
def sglang(sglang_options: EngineOptions) -> EngineOptions:
    """The shared fixture (tests/unit/conftest.py) under the name these tests use."""
    return sglang_options


@pytest.fixture(scope="module")
def renames() -> Renames:
    return load_renames()


def recipe_argv(role: str) -> list[str]:
    """The launch_server arguments of seed 003's 1P1D 32P IN64K OUT1K 50ms recipe."""
    path = FIXTURES / f"seed003_1p1d_32p_in64k_out1k_50ms_{role}.sh"
    words = shlex.split(path.read_text().replace("\\\n", " "))
    assert words[:3] == ["python3", "-m", "sglang.launch_server"]
    return words[3:]


def not_ok(findings):
    return [(f.index, f.flag, f.kind, f.severity) for f in findings if f.kind != "ok"]


# ------------------------------------------------------------------ extraction


def test_installed_sglang_has_559_option_strings_in_531_arguments(sglang):
    assert len(sglang.option_strings) == 559
    assert len(set(sglang.option_strings)) == 559
    assert len(sglang.arguments) == 531
    assert sum(len(a.options) > 1 for a in sglang.arguments) == 27


@pytest.mark.parametrize(
    ("flag", "options", "nargs", "choices"),
    [
        ("--tp-size", ("--tp-size", "--tensor-parallel-size"), None, None),
        ("--ep", ("--ep-size", "--expert-parallel-size", "--ep"), None, None),
        ("--model", ("--model-path", "--model"), None, None),
        ("--enable-dp-lm-head", ("--enable-dp-lm-head",), 0, None),
        ("--cuda-graph-bs-decode", ("--cuda-graph-bs-decode",), "+", None),
        ("--lora-paths", ("--lora-paths",), "*", None),  # custom action, action_kwargs
        ("--cp-strategy", ("--cp-strategy",), None, ("zigzag", "interleave")),
        ("--deepep-mode", ("--deepep-mode",), None, ("auto", "normal", "low_latency")),
        ("--disaggregation-mode", ("--disaggregation-mode",), None, ("null", "prefill", "decode")),
        (
            "--no-enable-fused-qk-norm-rope",  # BooleanOptionalAction
            ("--enable-fused-qk-norm-rope", "--no-enable-fused-qk-norm-rope"),
            0,
            None,
        ),
        (  # choices=Backend.ALL, a class attribute built from other class attributes
            "--cuda-graph-backend-decode",
            ("--cuda-graph-backend-decode",),
            None,
            ("full", "breakable", "disabled"),
        ),
        ("--monokernel-backend", ("--monokernel-backend",), None, ("amd",)),  # nargs=None
        ("--reasoning-parser", ("--reasoning-parser",), None, None),  # choices computed
    ],
)
def test_installed_sglang_argument_shapes(sglang, flag, options, nargs, choices):
    arg = sglang.lookup(flag)
    assert (arg.options, arg.nargs, arg.choices) == (options, nargs, choices)


def test_installed_sglang_choices_and_deprecations(sglang):
    backends = sglang.lookup("--disaggregation-transfer-backend").choices
    assert backends == ("mooncake", "nixl", "ascend", "fake", "mori", "mooncake_tcp")
    assert sglang.lookup("--load-balance-method").choices == (
        *("auto", "round_robin", "follow_bootstrap_room", "total_requests", "total_tokens"),
    )
    assert len(sglang.lookup("--attention-backend").choices) == 25
    deprecated = {a.canonical: a.deprecated for a in sglang.arguments if a.deprecated}
    assert sorted(deprecated) == [
        "--disable-cuda-graph",
        "--enable-dp-attention",
        "--enable-flashinfer-allreduce-fusion",
        "--monokernel-backend",
    ]
    assert deprecated["--enable-dp-attention"] == "--attn-dp-size <dp-size>"


@needs_sglang
def test_extraction_imports_neither_sglang_nor_torch():
    code = (
        "import sys, time; from pathlib import Path\n"
        "from toolkit.preflight.flags import extract_sglang_options\n"
        "t = time.perf_counter()\n"
        f"opts = extract_sglang_options(Path({str(SGLANG_DIR)!r}))\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = [m for m in ('torch', 'sglang', 'msgspec') if m in sys.modules]\n"
        "print(len(opts.option_strings), heavy, elapsed < 3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "559 [] True"


def test_legacy_layout_reads_add_argument_calls():
    options = extract_sglang_options(FIXTURES / "sglang_legacy")
    assert options.version == "0.4.9.post2"
    assert [a.options for a in options.arguments] == [
        ("--model-path", "--model"),
        ("--tp-size", "--tensor-parallel-size"),
        ("--quantization",),
        ("--attention-backend",),
        ("--enable-nsa-prefill-context-parallel",),
        ("--nsa-prefill-cp-mode",),
        ("--cuda-graph-bs",),
        ("--enable-metrics", "--no-enable-metrics"),
        ("--disable-radix",),
    ]
    assert [a.nargs for a in options.arguments] == [None, None, None, None, 0, None, "+", 0, 0]
    assert options.lookup("--attention-backend").choices == ("triton", "flashinfer", "ascend")
    assert options.lookup("--disable-radix").deprecated == "Deprecated: use --no-radix."


def test_legacy_sglang_still_accepts_the_old_cp_flags(renames):
    options = extract_sglang_options(FIXTURES / "sglang_legacy")
    argv = ["--model", "m", "--enable-nsa-prefill-context-parallel", "--nsa-prefill-cp-mode"]
    findings = check_argv([*argv, "in-seq-split"], options, renames)
    assert [f.kind for f in findings] == ["ok", "ok", "ok"]
    assert translate_argv([*argv, "in-seq-split"], options, renames)[1] == []


def test_vllm_synthetic_tree():
    options = extract_vllm_options(FIXTURES / "vllm_tree")
    assert (options.engine, options.version) == ("vllm", "0.11.0")
    assert len(options.arguments) == 15
    assert options.lookup("-tp").canonical == "--tensor-parallel-size"
    assert options.lookup("--no-enable-prefix-caching").nargs == 0
    assert options.lookup("--cuda-graph-sizes").nargs == "+"
    assert options.lookup("--distributed-executor-backend").choices == ("ray", "mp", "uni")
    assert options.lookup("--uvicorn-log-level").choices == ("debug", "info", "warning")
    assert options.lookup("--registry") is None  # ClassVar, not a field
    argv = ["org/model", "--tensor_parallel_size", "8", "--distributed-executor-backend", "mpi"]
    assert not_ok(check_argv(argv, options, Renames())) == [
        (3, "--distributed-executor-backend", "bad_choice", "error")
    ]


def test_vllm_032_frontend_args_register_their_own_and_inherited_fields():
    # vLLM 0.32 moved --host/--port to entrypoints/launchers/cli_args.py, registered by
    # `FrontendArgs.add_cli_args` looping over get_kwargs(cls); the real parser has 430
    # option strings, of which this extractor finds 424 (all but -h/--help and four --no-
    # forms of `bool | None` fields).
    options = extract_vllm_options(FIXTURES / "vllm_032_tree")
    assert options.version == "0.32.0"
    assert sorted(o for a in options.arguments for o in a.options) == [
        "--api-key",
        "--disable-uvicorn-access-log",
        "--host",
        "--no-disable-uvicorn-access-log",
        "--port",
    ]


# ------------------------------------------------------------------ seed 003 recipes


def test_seed003_prefill_findings(sglang, renames):
    argv = recipe_argv("prefill")
    findings = check_argv(argv, sglang, renames)
    assert not_ok(findings) == [
        (41, "--disable-cuda-graph", "deprecated", "warning"),
        (46, "--enable-nsa-prefill-context-parallel", "renamed", "error"),
        (47, "--nsa-prefill-cp-mode", "renamed", "error"),
        (52, "--moe-dense-tp", "abbreviation", "warning"),
    ]
    assert sum(f.kind == "ok" for f in findings) == 26
    by_flag = {f.flag: f for f in findings}
    assert by_flag["--enable-nsa-prefill-context-parallel"].replacement == ("--enable-prefill-cp",)
    mode = by_flag["--nsa-prefill-cp-mode"]
    assert mode.replacement == ("--cp-strategy", "zigzag")
    assert "(in-seq-split → zigzag)" in mode.message
    assert "#27312" in mode.source
    assert by_flag["--moe-dense-tp"].canonical == "--moe-dense-tp-size"
    assert (
        "--cuda-graph-backend-{decode,prefill}=disabled" in by_flag["--disable-cuda-graph"].message
    )


def test_seed003_decode_findings(sglang, renames):
    findings = check_argv(recipe_argv("decode"), sglang, renames)
    assert not_ok(findings) == [
        (18, "--enable-dp-attention", "deprecated", "warning"),
        (37, "--cuda-graph-bs", "renamed", "error"),
        (49, "--prefill-round-robin-balance", "removed", "error"),
    ]
    by_flag = {f.flag: f for f in findings}
    # Ambiguous on 0.5.23 (-decode / -prefill); the known meaning is the decode graph.
    assert by_flag["--cuda-graph-bs"].replacement[0] == "--cuda-graph-bs-decode"
    removed = by_flag["--prefill-round-robin-balance"]
    assert "already sets --load-balance-method round_robin" in removed.message
    assert removed.replacement == ("--load-balance-method", "round_robin")


def test_seed003_prefill_translation(sglang, renames):
    argv = recipe_argv("prefill")
    new, changes = translate_argv(argv, sglang, renames)
    assert [str(c) for c in changes] == [
        "--enable-nsa-prefill-context-parallel → --enable-prefill-cp: renamed in sglang 0.5.23",
        "--nsa-prefill-cp-mode in-seq-split → --cp-strategy zigzag: renamed in sglang 0.5.23",
        "--moe-dense-tp 1 → --moe-dense-tp-size 1: abbreviation of --moe-dense-tp-size",
    ]
    assert new[46:49] == ["--enable-prefill-cp", "--cp-strategy", "zigzag"]
    assert new[52:54] == ["--moe-dense-tp-size", "1"]
    assert len(new) == len(argv)
    assert not_ok(check_argv(new, sglang, renames)) == [
        (41, "--disable-cuda-graph", "deprecated", "warning")
    ]
    assert translate_argv(new, sglang, renames) == (new, [])  # idempotent


def test_seed003_decode_translation_drops_the_removed_flag(sglang, renames):
    argv = recipe_argv("decode")
    new, changes = translate_argv(argv, sglang, renames)
    assert len(changes) == 2
    assert changes[0].before == ("--cuda-graph-bs", "1", "2", "3")
    assert changes[0].after == ("--cuda-graph-bs-decode", "1", "2", "3")
    assert changes[1].before == ("--prefill-round-robin-balance",)
    assert changes[1].after == ()
    assert new.count("--load-balance-method") == 1
    assert new == [*argv[:37], "--cuda-graph-bs-decode", *argv[38:49], *argv[50:]]
    assert [f for f in check_argv(new, sglang, renames) if f.severity == "error"] == []


# ------------------------------------------------------------------ argv rules


def test_removed_flag_adds_its_replacement_when_absent(sglang, renames):
    argv = ["--model-path", "m", "--prefill-round-robin-balance", "--tp", "2"]
    finding = check_argv(argv, sglang, renames)[1]
    assert finding.kind == "removed"
    assert "(the argv does not set --load-balance-method)" in finding.message
    new, changes = translate_argv(argv, sglang, renames)
    assert new == ["--model-path", "m", "--load-balance-method", "round_robin", "--tp-size", "2"]
    assert "was removed" in changes[0].reason
    assert changes[1].reason == "abbreviation of --tp-size"  # `--tp` is a unique prefix


def test_translation_never_duplicates_a_flag(sglang, renames):
    argv = [
        "--enable-nsa-prefill-context-parallel",
        "--enable-prefill-cp",
        "--nsa-prefill-cp-mode=round-robin-split",
        "--dsa-prefill-cp-mode",
        "in-seq-split",
        "--moe-dense-tp=2",
    ]
    new, changes = translate_argv(argv, sglang, renames)
    assert new == ["--enable-prefill-cp", "--cp-strategy=interleave", "--moe-dense-tp-size=2"]
    assert [c.after for c in changes] == [
        (),
        ("--cp-strategy=interleave",),
        (),
        ("--moe-dense-tp-size=2",),
    ]
    assert "--cp-strategy interleave is already set" in changes[2].reason
    assert translate_argv(new, sglang, renames) == (new, [])


def test_unknown_flag_suggests_close_names(sglang, renames):
    (finding,) = check_argv(["--tp-sise", "4"], sglang, renames)
    assert (finding.kind, finding.severity) == ("unknown", "error")
    assert finding.suggestions[0] == "--tp-size"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--disaggregation-transfer-backend", "rdma"], [(0, "bad_choice")]),
        (["--load-balance-method", "round-robin"], [(0, "bad_choice")]),
        (["--log-requests-level", "2"], [(0, "ok")]),  # int choices 0..3
        (["--log-requests-level", "7"], [(0, "bad_choice")]),
        (["--tp-size", "--nnodes", "2"], [(0, "missing_value"), (1, "ok")]),
        (["--enable-dp-lm-head=1"], [(0, "unexpected_value")]),
        (["--node-rank", "-1", "extra"], [(0, "ok"), (2, "positional")]),
        (["--cuda-graph-bs-decode", "1", "2", "4", "--pp-size=2"], [(0, "ok"), (4, "ok")]),
        (["--cp-strategy=zigzag"], [(0, "ok")]),
        (["--attention-back", "ascend"], [(0, "abbreviation")]),
        (["--attention", "ascend"], [(0, "ambiguous")]),
    ],
)
def test_argv_rules(sglang, renames, argv, expected):
    assert [(f.index, f.kind) for f in check_argv(argv, sglang, renames)] == expected


def test_renames_apply_only_within_their_version_range(sglang, renames):
    old = dataclasses.replace(sglang, version="0.5.10")
    (finding,) = check_argv(["--enable-nsa-prefill-context-parallel"], old, renames)
    assert finding.kind == "unknown"


def test_renames_file_lists_sourced_entries(renames):
    flags = {(r.flag, r.kind, r.replacement) for r in renames.entries}
    assert flags == {
        ("--enable-nsa-prefill-context-parallel", "renamed", ("--enable-prefill-cp",)),
        ("--enable-dsa-prefill-context-parallel", "renamed", ("--enable-prefill-cp",)),
        ("--nsa-prefill-cp-mode", "renamed", ("--cp-strategy",)),
        ("--dsa-prefill-cp-mode", "renamed", ("--cp-strategy",)),
        ("--prefill-round-robin-balance", "removed", ("--load-balance-method", "round_robin")),
        ("--cuda-graph-bs", "renamed", ("--cuda-graph-bs-decode",)),
        ("--cuda-graph-max-bs", "renamed", ("--cuda-graph-max-bs-decode",)),
    }
    assert all(r.source and r.versions == ">=0.5.23" for r in renames.entries)
    mode = next(r for r in renames.entries if r.flag == "--nsa-prefill-cp-mode")
    assert dict(mode.values) == {"in-seq-split": "zigzag", "round-robin-split": "interleave"}


def test_bad_renames_file_names_file_and_line(tmp_path):
    path = tmp_path / "renames.yaml"
    path.write_text("sglang:\n  - flag: --a\n    kind: renamed\n    to: --b\n  - flag: --c\n")
    with pytest.raises(YamlError, match=r"renames\.yaml:5: bad rename entry: 'kind'"):
        load_renames(path)
