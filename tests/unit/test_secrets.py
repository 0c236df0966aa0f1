"""Secrets never shown, and given to the engine through its environment where it reads one.

`toolkit profiles NAME`, plans (text and JSON) and kept scripts (`plan --format sh`) mask
secret env values and secret flag values; vLLM gets `--api-key`/`--hf-token` as
VLLM_API_KEY/HF_TOKEN in the owner-only launch script, never in its argv; sglang (which reads
`--api-key` only from argv) gets the flag, masked wherever toolkit prints it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_planner import plan_for
from toolkit.render.plan_text import argv_text
from toolkit.render.scripts import ScriptOptions, node_script
from toolkit.secrets import MASK, is_secret_flag, mask_argv, mask_text

SECRET = "sk-live-0123456789"
VLLM = "b200-glm5-fp8-vllm"
SGLANG = "a3-1p1d-64k"


def toolkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("flag", "secret"),
    [
        ("--api-key", True),
        ("--admin-api-key", True),
        ("--hf-token", True),
        ("--ssl-keyfile-password", True),
        ("--control-plane-api-keys", True),
        ("--max-total-tokens", False),
        ("--ssl-keyfile", False),
        ("--tokenizer-worker-num", False),
        ("--rate-limit-tokens-per-second", False),
    ],
)
def test_secret_flags(flag: str, secret: bool) -> None:
    assert is_secret_flag(flag) is secret


def test_mask_argv_hides_every_form_of_a_secret_value() -> None:
    argv = ["python", "--api-key", SECRET, "--hf-token=" + SECRET, "--port", "-1"]
    argv += ["--control-plane-api-keys", "a:b:admin:k1", "c:d:user:k2", "--tp", "8"]
    assert mask_argv(argv) == [
        "python",
        "--api-key",
        MASK,
        "--hf-token=" + MASK,
        "--port",
        "-1",
        "--control-plane-api-keys",
        MASK,
        MASK,
        "--tp",
        "8",
    ]


def test_profiles_name_masks_secret_env_values(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        f"extends: {SGLANG}\nenv:\n  HF_TOKEN: {SECRET}\n"
        f"roles:\n  decode:\n    env:\n      OPENAI_API_KEY: {SECRET}\n"
    )
    result = toolkit("profiles", "mine", "--profiles-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    assert f"HF_TOKEN: '{MASK}'" in result.stdout
    assert f"OPENAI_API_KEY: '{MASK}'" in result.stdout


def test_vllm_gets_its_api_key_and_hf_token_from_the_environment() -> None:
    plan = plan_for(
        VLLM,
        overrides=(f"roles.mixed.args.api-key={SECRET}", f"roles.mixed.args.hf-token={SECRET}"),
    )
    node = plan.nodes[0]
    assert node.env["VLLM_API_KEY"] == SECRET and node.env["HF_TOKEN"] == SECRET
    assert SECRET not in node.argv and "--api-key" not in node.argv
    # The executor's owner-only script holds the value, as an export, not on the exec line.
    script = node_script(plan, node, ScriptOptions(inline_secrets=True))
    assert f"export VLLM_API_KEY={SECRET}" in script
    assert SECRET not in script.split("\nexec ", 1)[1]
    # Plans show neither.
    assert SECRET not in plan.to_json()


def test_sglang_api_key_stays_a_flag_but_is_masked_wherever_shown() -> None:
    plan = plan_for(SGLANG, overrides=(f"roles.decode.args.api-key={SECRET}",))
    decode = next(n for n in plan.nodes if n.role == "decode")
    assert decode.argv[decode.argv.index("--api-key") + 1] == SECRET
    data = json.loads(plan.to_json())
    raw = next(n for n in data["nodes"] if n["role"] == "decode")
    assert raw["argv"][raw["argv"].index("--api-key") + 1] == MASK
    assert SECRET not in plan.to_json()
    assert SECRET not in argv_text(decode.argv).plain and MASK in argv_text(decode.argv).plain
    # The executor's script has the value (owner-only, deleted by down); it is sglang's only way.
    assert SECRET in node_script(plan, decode, ScriptOptions(inline_secrets=True))


def test_kept_scripts_read_secret_flags_from_the_environment(tmp_path: Path) -> None:
    plan = plan_for(SGLANG)
    node = replace(plan.nodes[0], source=[], nic_env=[], env={})
    argv = ("printf", "%s|", "--api-key", SECRET, f"--hf-token={SECRET}")
    script = node_script(plan, node, ScriptOptions(include_tuning=False, argv=argv))
    assert SECRET not in script
    path = tmp_path / "kept.sh"
    path.write_text(script)
    missing = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "TOOLKIT_SECRET_API_KEY must be set" in missing.stderr
    env = {"PATH": "/usr/bin:/bin", "TOOLKIT_SECRET_API_KEY": "k1", "TOOLKIT_SECRET_HF_TOKEN": "k2"}
    ran = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "--api-key|k1|--hf-token=k2|"


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            f"ServerArgs(api_key='{SECRET}', admin_api_key=None, max_total_tokens=5)",
            "ServerArgs(api_key='********', admin_api_key=None, max_total_tokens=5)",
        ),
        (
            f"x --api-key {SECRET} --port 5 --hf-token={SECRET}",
            f"x --api-key {MASK} --port 5 --hf-token={MASK}",
        ),
        (f'{{"password": "{SECRET}", "n": 2}}', f'{{"password": "{MASK}", "n": 2}}'),
        ("the key was rotated; num_max_dispatch_tokens_per_rank=128", None),
    ],
)
def test_log_lines_mask_values_next_to_secret_names(line: str, shown: str | None) -> None:
    """`toolkit logs` and up's failure report print engine logs, which echo their arguments."""
    assert mask_text(line) == (line if shown is None else shown)
