"""What `toolkit bench` uploads to a rehearsal's bench host runs there without toolkit.

Hosts of a real cluster have no toolkit installed (issue 8: the helpers imported
`toolkit.rehearsal.*` and the bench failed, blaming `tokenizers`). These tests copy the
uploaded files to a bare directory and run them as the bench host does, with toolkit
unimportable."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.rehearsal import LOOPBACK, Processes, free_port, sse_events, wait_status
from toolkit import rehearsal
from toolkit.render.scripts import rehearsal_prepare_script

# Installs an import hook that refuses toolkit, then runs the script named in argv[1].
BARE = """
import importlib.abc, runpy, sys
class NoToolkit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toolkit" or name.startswith("toolkit."):
            raise ImportError("toolkit is not installed on this host")
sys.meta_path.insert(0, NoToolkit())
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = __import__("os").path.dirname(script)
runpy.run_path(script, run_name="__main__")
"""


def _upload(tmp_path: Path) -> Path:
    base = tmp_path / "rehearsal bench"  # a space, as a workdir may have
    base.mkdir()
    for name in rehearsal.BENCH_HELPERS:
        shutil.copy(rehearsal.DIRECTORY / name, base / name)
    return base


def test_helpers_import_nothing_from_toolkit_at_module_level() -> None:
    assert rehearsal.BENCH_HELPERS and rehearsal.ENGINE_MODULES
    for name in {*rehearsal.BENCH_HELPERS, *rehearsal.ENGINE_MODULES}:
        tree = ast.parse((rehearsal.DIRECTORY / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("toolkit"), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("toolkit") for a in node.names), name


def test_dataset_runs_with_the_standard_library_only(tmp_path: Path) -> None:
    base = _upload(tmp_path)
    out = base / "sharegpt.json"
    # -S: no site-packages at all, so neither toolkit nor anything else installed.
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", "dataset.py", str(out), "12"],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert len(data) == 12 and data[0]["conversations"][0]["from"] == "human"


def test_prepare_script_builds_tokenizer_and_dataset_without_toolkit(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    base = _upload(tmp_path)
    runner = tmp_path / "bare-python"
    runner.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{BARE}' \"$@\"\n")
    runner.chmod(0o755)
    script = base / "prepare.sh"
    script.write_text(rehearsal_prepare_script(str(runner), str(base)))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    config = json.loads((base / "tokenizer" / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert len(json.loads((base / "sharegpt.json").read_text())) == 200


def test_the_import_hook_really_refuses_toolkit(tmp_path: Path) -> None:
    """The test above proves something only if the hook blocks an installed toolkit."""
    probe = tmp_path / "probe.py"
    probe.write_text("import toolkit\n")
    result = subprocess.run(
        [sys.executable, "-c", BARE, str(probe)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "toolkit is not installed" in result.stderr


def test_uploaded_engine_files_serve_without_toolkit_or_site_packages(tmp_path: Path) -> None:
    """`up --rehearse` writes `engine_files()` into one directory of a host and runs the entry
    file there: every sibling it imports must be among them, and nothing outside the stdlib."""
    files = rehearsal.engine_files()
    assert sorted(files) == sorted(p.name for p in rehearsal.DIRECTORY.glob("engine*.py"))
    base = tmp_path / "run dir" / "rehearsal"
    base.mkdir(parents=True)
    for name, text in files.items():
        (base / name).write_text(text)
    procs = Processes(tmp_path)
    try:
        port = free_port()
        argv = [sys.executable, "-S", "-E", "-s", "-c", BARE, str(base / rehearsal.ENGINE_ENTRY)]
        procs.start("bare", [*argv, "--load-seconds", "0.1", "--", "--port", str(port)])
        url = f"http://{LOOPBACK}:{port}"
        wait_status(url + "/health")
        body = {"text": "x", "stream": True, "sampling_params": {"max_new_tokens": 3}}
        events = sse_events(url + "/generate", body)
        assert json.loads(events[-2])["meta_info"]["completion_tokens"] == 3
    finally:
        procs.stop_all()
