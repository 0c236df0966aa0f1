"""The probe (`host_facts`, toolkit/host/probe.py), run for real as the check runs it: in
the host agent, started from the bundle on the host's interpreter, one JSON request in.

Each interpreter available here (the venv's, the system python3, a 3.8 if installed)
starts the agent; the facts must hold real values about this machine and the fixtures the
test builds (a listening socket, a model directory, fake npu-smi/nvidia-smi).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.host import bundle, protocol
from toolkit.host.protocol import Op, Result
from toolkit.preflight.accelerators import parse_npu_smi, parse_nvidia_smi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"


def runnable(python: str | None) -> bool:
    try:
        return subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0
    except (OSError, TypeError):
        return False


# The oldest python3 the probe promises to support; pyenv shims may exist but not run.
PY38_CANDIDATES = [shutil.which("python3.8"), "/root/.pyenv/versions/3.8.18/bin/python3.8"]
PY38 = next((p for p in PY38_CANDIDATES if runnable(p)), "python3.8")
INTERPRETERS = [sys.executable, "/usr/bin/python3", PY38]


def agent_request(python: str, ops: list[Op], env: dict | None = None) -> tuple[list, list]:
    """Start the agent on `python` as the session does, send one request, close it; the
    progress events and the results."""
    request = bundle.payload(check=True) + protocol.encode_request(ops, False).encode() + b"\n"
    done = subprocess.run(
        [python, "-u", "-c", bundle.BOOTSTRAP],
        input=request,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    events = [
        json.loads(x[len(protocol.PROGRESS) :]) for x in lines if x.startswith(protocol.PROGRESS)
    ]
    results = [x[len(protocol.RESULT) :] for x in lines if x.startswith(protocol.RESULT)]
    assert len(results) == 1, done.stdout.decode()
    return events, protocol.decode_results(results[0])


def probe_result(python: str, params: dict, env: dict | None = None) -> tuple[list, Result]:
    events, results = agent_request(python, [Op("host_facts", params)], env)
    assert [r.status for r in results] == ["ok"], results
    return events, results[0]


def run_probe(python: str, params: dict, env: dict | None = None) -> dict:
    return probe_result(python, params, env)[1].data["facts"]


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """An HF-like layout: shards, a subdir, a symlinked blob and a broken link."""
    model = tmp_path / "GLM-5.1-W4A8"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text("{}" * 5)  # 10 bytes
    (model / "model-00001-of-00002.safetensors").write_bytes(b"x" * 100)
    (model / "tokenizer" / "tokenizer.json").write_text("abcde")
    blob = tmp_path / "blob"
    blob.write_bytes(b"y" * 1000)
    (model / "model-00002-of-00002.safetensors").symlink_to(blob)
    (model / "dangling.bin").symlink_to(tmp_path / "missing")
    return model


@pytest.mark.parametrize("python", INTERPRETERS)
def test_probe_facts(python, tmp_path, model_dir):
    if not runnable(python):
        pytest.skip(f"{python} is not available")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "npu-smi", f"cat '{FIXTURES / 'npu_smi_a3_16chips.txt'}'")
    fake_tool(bin_dir, "nvidia-smi", f"cat '{FIXTURES / 'nvidia_smi_8gpus.csv'}'")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    params = {
        "model_dir": str(model_dir),
        "max_files": 3,
        "disk_paths": [str(tmp_path / "not" / "yet")],
        "files": [str(model_dir / "config.json"), "/usr/local/Ascend/cann/set_env.sh"],
        "sysctls": ["vm.swappiness", "../../etc/passwd"],
    }
    with socket.socket(socket.AF_INET) as v4, socket.socket(socket.AF_INET6) as v6:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        facts = run_probe(python, params, env)
        ports = {(s["address"], s["port"]) for s in facts["listening"]}
        assert ("127.0.0.1", v4.getsockname()[1]) in ports
        assert ("::1", v6.getsockname()[1]) in ports

    assert [k for k, v in facts.items() if isinstance(v, dict) and "error" in v] == []
    assert facts["python"]["executable"] == python
    assert facts["python"]["version_info"][:2] >= [3, 8]
    assert abs(facts["time"]["epoch"] - time.time()) < 60
    lo = next(i for i in facts["interfaces"]["interfaces"] if i["name"] == "lo")
    assert "127.0.0.1/8" in lo["ipv4"]

    disk = facts["disk"][str(tmp_path / "not" / "yet")]
    assert disk["checked"] == str(tmp_path)
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]

    model = facts["model_dir"]
    assert (model["exists"], model["is_dir"], model["has_config"]) == (True, True, True)
    assert (model["file_count"], model["total_bytes"], model["broken_links"]) == (5, 1115, 1)
    assert model["files"] == ["config.json", "dangling.bin", "model-00001-of-00002.safetensors"]
    assert model["truncated"] is True

    assert facts["files"][str(model_dir / "config.json")] == {
        "exists": True,
        "is_file": True,
        "size": 10,
    }
    assert facts["files"]["/usr/local/Ascend/cann/set_env.sh"]["exists"] is False
    swappiness = Path("/proc/sys/vm/swappiness").read_text().strip()
    assert facts["sysctl"] == {"vm.swappiness": swappiness, "../../etc/passwd": None}

    npu = facts["npu_smi"]
    assert (npu["found"], npu["rc"], npu["path"]) == (True, 0, str(bin_dir / "npu-smi"))
    assert len(parse_npu_smi(npu["stdout"]).accelerators) == 16
    assert len(parse_nvidia_smi(facts["nvidia_smi"]["stdout"]).accelerators) == 8
    has_governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").exists()
    assert facts["cpufreq"]["present"] is has_governor


def test_probe_reports_packages_without_importing_them():
    spec_dir = Path(__import__("importlib.util").util.find_spec("sglang").origin).parent
    facts = run_probe(sys.executable, {"run_smi": False})
    sglang = facts["packages"]["sglang"]
    assert sglang == {"version": "0.5.23", "path": str(spec_dir)}
    assert facts["packages"]["vllm"] == {"version": None, "path": None}
    assert facts["sglang_source"]["server_args"] == str(spec_dir / "srt" / "server_args.py")
    assert len(facts["sglang_source"]["server_args_sha256"]) == 64
    code = (
        "import sys; from toolkit.host import probe; "
        "probe.probe({'run_smi': False}); "
        "print([m for m in ('sglang', 'torch', 'vllm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_system_python_sees_no_packages():
    if not runnable("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    facts = run_probe("/usr/bin/python3", {"run_smi": False})
    assert facts["packages"]["sglang"] == {"version": None, "path": None}
    assert facts["sglang_source"] is None


def test_interfaces_fall_back_to_proc_without_ip(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no `ip`, no smi tools
    facts = run_probe(sys.executable, {"run_smi": True}, env)
    assert facts["interfaces"]["source"] == "proc"
    lo = next(i for i in facts["interfaces"]["interfaces"] if i["name"] == "lo")
    assert lo["ipv4"] == ["127.0.0.1/8"]
    assert facts["npu_smi"]["found"] is (os.access("/usr/local/sbin/npu-smi", os.X_OK))


def test_slow_tool_times_out(tmp_path):
    fake_tool(tmp_path, "nvidia-smi", "sleep 5")
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    facts = run_probe(sys.executable, {"smi_timeout": 0.5}, env)
    assert facts["nvidia_smi"]["timed_out"] is True
    assert time.monotonic() - started < 4


def test_clock_first_then_uid_sudo_and_the_fallback_flag():
    env = dict(os.environ, TOOLKIT_PYTHON_MISSING="1")
    before = time.time()
    events, found = probe_result(sys.executable, {"run_smi": False, "sudo": False}, env)
    assert len(events) == 1 and before <= events[0]["clock"] <= time.time()
    assert found.data["uid"] == os.getuid()
    assert found.data["sudo"] is None  # not asked
    assert found.data["python_missing"] is True
    assert found.data["facts"]["probe_version"] == 1
