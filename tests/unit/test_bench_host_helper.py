"""The bench host's helper, run as the host runs it: a script under a bare Python.

`python -I bench_helper.py` (isolated mode: no user site, no PYTHONPATH) shows it needs
nothing from toolkit. The endpoint facts come from a real listener on loopback; the stop
from a real process group.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.host import bench_helper

HELPER = Path(bench_helper.__file__)


def helper(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-I", str(HELPER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stdout.splitlines() if x.startswith(bench_helper.MARK)]
    return json.loads(line[len(bench_helper.MARK) :])


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_facts_endpoint_dataset_and_hub_offline(server: str, tmp_path: Path) -> None:
    data = tmp_path / "d.json"
    data.write_text("[]")
    spec = {"endpoint": f"{server}/health", "dataset_path": str(data), "check_hub": False}
    facts = helper("facts", json.dumps(spec))
    assert facts["endpoint"] == {"status": 200}
    assert facts["dataset_path"]["exists"] is True
    assert "hub" not in facts

    dead = {"endpoint": f"http://127.0.0.1:{_closed_port()}/health", "dataset_path": "/nope.json"}
    facts = helper("facts", json.dumps(dead))
    assert facts["endpoint"]["status"] is None and "refused" in facts["endpoint"]["error"]
    assert facts["dataset_path"]["exists"] is False


def test_facts_hub_offline_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    # HF_HUB_OFFLINE answers without any connection attempt.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    facts = helper("facts", json.dumps({"check_hub": True}))
    assert facts["hub"] == {"reachable": False, "detail": "HF_HUB_OFFLINE is set"}


def test_facts_find_the_clients_without_importing_them() -> None:
    """This interpreter has SGLang 0.5.23 (setup.sh) and no vLLM."""
    out = subprocess.run(
        [sys.executable, str(HELPER), "facts", "{}"], capture_output=True, text=True, timeout=60
    )
    facts = json.loads(out.stdout.split(bench_helper.MARK, 1)[1])
    assert facts["sglang"]["installed"] and facts["sglang"]["version"] == "0.5.23"
    assert facts["sglang"]["module"] == "sglang.benchmark.serving"
    assert facts["vllm"] == {"installed": False}
    assert "sglang" not in out.stderr  # nothing imported: no deprecation or import noise


def test_corpus_is_deterministic_sharegpt(tmp_path: Path) -> None:
    first = helper("corpus", str(tmp_path / "a.json"), "5", "40", "0")
    helper("corpus", str(tmp_path / "b.json"), "5", "40", "0")
    assert first["reused"] is False
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    items = json.loads((tmp_path / "a.json").read_text())
    assert len(items) == 5
    human, gpt = items[0]["conversations"]
    assert (human["from"], gpt["from"]) == ("human", "gpt")
    assert len(human["value"].split()) == 40
    assert helper("corpus", str(tmp_path / "a.json"), "5", "40", "0")["reused"] is True


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "bench.pid"
    # A client that ignores nothing, with a child: both must go.
    proc = subprocess.Popen(
        ["bash", "-c", f"echo $$ > {pidfile}; sleep 300 & wait"], start_new_session=True
    )
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.02)
    answer = helper("stop", str(pidfile), "5")
    assert answer["stopped"] is True and answer["detail"] == "stopped with SIGTERM"
    assert proc.wait(timeout=10) != 0
    table = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True).stdout
    left = [row for row in table.splitlines() if row.split()[0] == str(proc.pid)]
    assert [row for row in left if not row.split()[1].startswith("Z")] == []


def test_stop_without_a_started_client(tmp_path: Path) -> None:
    answer = helper("stop", str(tmp_path / "never.pid"), "1")
    assert answer["stopped"] is False and "had not started" in answer["detail"]


def test_helper_imports_only_the_standard_library() -> None:
    imported = {
        line.split()[1].split(".")[0]
        for line in HELPER.read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    assert os.access(HELPER, os.R_OK)
