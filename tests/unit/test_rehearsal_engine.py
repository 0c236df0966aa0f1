"""The rehearsal engine as a real subprocess on 127.0.0.1: protocol, timing, failure modes.

Each test starts engines with free ports and stops them in a fixture, so nothing outlives a
failed assertion. Timing bounds are loose enough for a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rehearsal import (
    LOOPBACK,
    Processes,
    free_port,
    get_json,
    post_json,
    request,
    sse_events,
    wait_status,
)
from toolkit.rehearsal import engine as engine_module
from toolkit.rehearsal import engine_settings
from toolkit.rehearsal.dataset import write_sharegpt
from toolkit.rehearsal.tokenizer import build_tiny_tokenizer

FAST = ["--load-seconds", "0.3", "--tpot-ms", "10", "--ttft-base-ms", "5"]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def start_ready(procs: Processes, name: str, args: list[str], timing=FAST) -> str:
    """Starts an engine on a free port and returns its base URL once /health is 200."""
    port = free_port()
    procs.engine(name, ["--host", LOOPBACK, "--port", str(port), *args], list(timing))
    url = f"http://{LOOPBACK}:{port}"
    wait_status(url + "/health")
    return url


# ---------------------------------------------------------------------------- pure parsing


def test_parse_flags_tolerates_unknown_multi_value_and_equals_flags() -> None:
    flags, positionals = engine_settings.parse_flags(
        ["serve", "m", "--cuda-graph-bs", "1", "2", "3", "--port=31000", "--trust-remote-code"]
    )
    assert positionals == ["serve", "m"]
    assert flags == {"cuda-graph-bs": ["1", "2", "3"], "port": ["31000"], "trust-remote-code": []}


def test_command_line_reads_sglang_flags_env_defaults_and_option_override(monkeypatch) -> None:
    monkeypatch.setenv("TOOLKIT_REHEARSAL_TPOT_MS", "33")
    monkeypatch.setenv("TOOLKIT_REHEARSAL_LOAD_SECONDS", "9")
    argv = "--load-seconds 1 -- --model /m --tp 8 --nnodes 2 --node-rank 1"
    argv += " --dist-init-addr 10.0.0.1:5000 --enable-dp-attention"
    timing, settings = engine_settings.parse_command_line(argv.split())
    assert (timing.tpot_ms, timing.load_seconds) == (33.0, 1.0)
    assert (settings.model_path, settings.tp_size, settings.nnodes) == ("/m", 8, 2)
    assert (settings.node_rank, settings.dist_init_addr) == (1, "10.0.0.1:5000")
    assert (settings.host, settings.port, settings.mode) == ("127.0.0.1", 30000, "null")


def test_vllm_command_line_takes_model_positional_and_defaults() -> None:
    _, settings = engine_settings.parse_command_line(
        ["--engine", "vllm", "--", "serve", "/models/q", "-tp", "4", "--served-model-name", "q"]
    )
    assert (settings.engine, settings.model_path, settings.model_id) == ("vllm", "/models/q", "q")
    assert (settings.port, settings.host, settings.tp_size) == (8000, "0.0.0.0", 4)


def test_tiny_tokenizer_is_idempotent_and_has_one_token_per_engine_word(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    directory = build_tiny_tokenizer(tmp_path / "tok")
    stamp = (directory / "tokenizer.json").stat().st_mtime_ns
    assert build_tiny_tokenizer(tmp_path / "tok") == directory
    assert (directory / "tokenizer.json").stat().st_mtime_ns == stamp  # not rebuilt
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["chat_template"]
    assert json.loads((directory / "config.json").read_text())["model_type"] == "llama"
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 512
    text = "".join(" " + word for word in engine_settings.WORDS)
    ids = tokenizer.encode(text).ids
    assert len(ids) == len(engine_settings.WORDS) and tokenizer.decode(ids) == text


def test_sharegpt_file_is_deterministic_two_turn_conversations(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path, n=5)
    data = json.loads(path.read_text())
    assert len(data) == 5
    assert all([t["from"] for t in d["conversations"]] == ["human", "gpt"] for d in data)
    assert write_sharegpt(tmp_path / "again.json", n=5).read_text() == path.read_text()


# ---------------------------------------------------------------------------- startup


def test_health_is_503_while_loading_then_200(procs: Processes) -> None:
    port = free_port()
    engine = procs.engine("e", ["--port", str(port)], ["--load-seconds", "1.0"])
    engine.wait_for_log("Uvicorn running on http://127.0.0.1:")
    url = f"http://{LOOPBACK}:{port}"
    assert request("GET", url + "/health")[0] == 503
    assert request("GET", url + "/ready")[0] == 503
    waited = wait_status(url + "/health")
    assert 0.3 < waited < 3.0
    engine.wait_for_log("The server is fired up and ready to roll!")


def test_info_routes_describe_the_planned_server(procs: Processes) -> None:
    args = ["--model-path", "/models/ds", "--served-model-name", "ds", "--tp-size", "4"]
    args += ["--cuda-graph-bs", "1", "2", "4", "--speculative-algorithm", "EAGLE"]
    url = start_ready(procs, "e", args, [*FAST, "--accept-length", "3.0"])
    assert get_json(url + "/v1/models")["data"][0]["id"] == "ds"
    for path in ("/server_info", "/get_server_info"):
        info = get_json(url + path)
        assert (info["tp_size"], info["served_model_name"], info["model_path"]) == (
            4,
            "ds",
            "/models/ds",
        )
        assert info["rehearsal"] is True and info["version"] == "0.5.23-rehearsal"
        assert info["internal_states"][0]["avg_spec_accept_length"] == 3.0
    assert get_json(url + "/get_model_info")["is_generation"] is True
    assert get_json(url + "/get_load")[0]["num_tokens"] == 0
    assert request("POST", url + "/flush_cache")[0] == 200
    status, metrics = request("GET", url + "/metrics")
    assert status == 200 and b"sglang:generation_tokens_total" in metrics
    assert request("GET", url + "/nowhere")[0] == 404


def test_generate_non_stream_returns_max_new_tokens(procs: Processes) -> None:
    url = start_ready(procs, "e", [])
    body = {"text": "the of and", "sampling_params": {"max_new_tokens": 7}}
    status, out = post_json(url + "/generate", body)
    assert status == 200
    meta = out["meta_info"]
    assert meta["completion_tokens"] == 7 == len(out["output_ids"]) == len(out["text"].split())
    assert meta["finish_reason"] == {"type": "length", "length": 7}
    assert meta["prompt_tokens"] == 3  # 10 characters at 4 per token


def test_generate_stream_is_cumulative_and_paced(procs: Processes) -> None:
    url = start_ready(procs, "e", [], ["--load-seconds", "0.2", "--tpot-ms", "30"])
    start = time.monotonic()
    events = sse_events(
        url + "/generate", {"text": "hi", "stream": True, "sampling_params": {"max_new_tokens": 8}}
    )
    elapsed = time.monotonic() - start
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["meta_info"]["completion_tokens"] for c in chunks] == list(range(1, 9))
    for before, after in itertools.pairwise(chunks):
        assert after["text"].startswith(before["text"]) and len(after["text"]) > len(before["text"])
    assert [c["meta_info"]["finish_reason"] for c in chunks[:-1]] == [None] * 7
    assert "e2e_latency" in chunks[-1]["meta_info"]
    assert 0.03 + 7 * 0.030 <= elapsed < 2.0  # ttft base 30 ms, then 7 steps of 30 ms


def test_batch_and_openai_routes(procs: Processes) -> None:
    url = start_ready(procs, "e", ["--served-model-name", "m"])
    status, out = post_json(
        url + "/generate",
        {"input_ids": [[1, 2, 3], [4, 5]], "sampling_params": {"max_new_tokens": 2}},
    )
    assert status == 200 and [o["meta_info"]["prompt_tokens"] for o in out] == [3, 2]
    status, out = post_json(url + "/v1/completions", {"prompt": "abcd", "max_tokens": 3})
    assert status == 200 and out["usage"]["completion_tokens"] == 3
    events = sse_events(
        url + "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]
    assert len([c for c in content if c]) == 4
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_tpot_slope_slows_concurrent_decoding(procs: Processes) -> None:
    timing = ["--load-seconds", "0.2", "--tpot-ms", "10", "--tpot-slope-ms", "20"]
    url = start_ready(procs, "e", [], timing)
    body = {"text": "x", "sampling_params": {"max_new_tokens": 11}}

    def timed() -> float:
        start = time.monotonic()
        assert post_json(url + "/generate", body)[0] == 200
        return time.monotonic() - start

    alone = timed()  # 10 steps of 10 + 20*1 ms
    results: list[float] = []
    threads = [threading.Thread(target=lambda: results.append(timed())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert alone < 0.5 and min(results) > alone * 1.6  # 10 steps of 10 + 20*3 ms


# ---------------------------------------------------------------------------- multi-node


def test_rank0_waits_for_rank1_then_both_ready(procs: Processes) -> None:
    dist = f"{LOOPBACK}:{free_port()}"
    common = ["--nnodes", "2", "--dist-init-addr", dist]
    port0, port1 = free_port(), free_port()
    rank0 = procs.engine("rank0", [*common, "--node-rank", "0", "--port", str(port0)], FAST)
    rank0.wait_for_log("Rendezvous listening")
    time.sleep(0.6)  # past load-seconds: rank 0 is still not ready without rank 1
    assert request("GET", f"http://{LOOPBACK}:{port0}/health")[0] == 503
    rank1 = procs.engine("rank1", [*common, "--node-rank", "1", "--port", str(port1)], FAST)
    wait_status(f"http://{LOOPBACK}:{port0}/health")
    url1 = f"http://{LOOPBACK}:{port1}"
    wait_status(url1 + "/health")
    rank1.wait_for_log(f"Dummy health check server started in background thread at {LOOPBACK}")
    rank0.wait_for_log("Node rank 1 joined the rendezvous")
    assert request("GET", url1 + "/ping")[0] == 200
    assert request("GET", url1 + "/health_generate")[0] == 200
    assert request("POST", url1 + "/generate", {"text": "x"})[0] == 404
    assert request("GET", url1 + "/server_info")[0] == 404
    # A clean shutdown of rank 0 ends rank 1 cleanly too.
    assert rank0.stop() == 0
    assert rank1.wait_exit(5) == 0


def test_rank1_with_unreachable_dist_init_exits_nonzero(procs: Processes) -> None:
    dead = f"{LOOPBACK}:{free_port()}"
    timing = ["--load-seconds", "0.2", "--rendezvous-timeout", "1"]
    args = [
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--dist-init-addr",
        dead,
        "--port",
        str(free_port()),
    ]
    rank1 = procs.engine("rank1", args, timing)
    assert rank1.wait_exit(10) == 1
    assert f"Could not reach rank 0 at --dist-init-addr {dead}" in rank1.log()


def test_duplicate_node_rank_is_refused(procs: Processes) -> None:
    dist = f"{LOOPBACK}:{free_port()}"
    common = ["--nnodes", "3", "--dist-init-addr", dist]
    timing = ["--load-seconds", "0.2", "--rendezvous-timeout", "30"]
    rank0 = procs.engine("rank0", [*common, "--port", str(free_port())], timing)
    rank0.wait_for_log("Rendezvous listening")
    procs.engine("a", [*common, "--node-rank", "1", "--port", str(free_port())], timing)
    rank0.wait_for_log("Node rank 1 joined")
    dup = procs.engine("b", [*common, "--node-rank", "1", "--port", str(free_port())], timing)
    assert dup.wait_exit(10) == 1
    assert "already joined (two nodes with the same --node-rank?)" in dup.log()


def test_nnodes_without_dist_init_addr_exits_1(procs: Processes) -> None:
    engine = procs.engine("e", ["--nnodes", "2", "--port", str(free_port())], FAST)
    assert engine.wait_exit(10) == 1
    assert "needs --dist-init-addr" in engine.log()


# ---------------------------------------------------------------------------- process life


def test_sigterm_exits_zero_within_a_second_even_mid_stream(procs: Processes) -> None:
    url = start_ready(procs, "e", [], ["--load-seconds", "0.2", "--tpot-ms", "100"])
    body = {"text": "x", "stream": True, "sampling_params": {"max_new_tokens": 100}}
    thread = threading.Thread(
        target=lambda: _ignore_errors(request, "POST", url + "/generate", body)
    )
    thread.start()
    time.sleep(0.3)
    proc = procs.procs[0]
    start = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait_exit(5) == 0
    assert time.monotonic() - start < 1.0
    thread.join(5)


def test_fail_after_seconds_exits_1_with_a_log_line(procs: Processes) -> None:
    engine = procs.engine("e", ["--port", str(free_port())], [*FAST, "--fail-after-seconds", "0.5"])
    assert engine.wait_exit(10) == 1
    assert "Simulated crash after 0.5 s (--fail-after-seconds)" in engine.log()


def test_port_in_use_exits_1(procs: Processes) -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        engine = procs.engine("e", ["--port", str(port)], FAST)
        assert engine.wait_exit(10) == 1
    assert "while attempting to bind on address" in engine.log()


def test_http2_preface_probe_is_refused_and_server_keeps_serving(procs: Processes) -> None:
    url = start_ready(procs, "e", [])
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.")
    assert request("GET", url + "/health")[0] == 200


def test_keep_alive_http10_close_delimited_stream_and_head(procs: Processes) -> None:
    """What clients of the real server rely on: one HTTP/1.1 connection serves request after
    request, a streamed one included (chunked); an HTTP/1.0 client gets the stream as a
    close-delimited body; HEAD on a GET route is 405 without a body, as FastAPI answers."""
    url = start_ready(procs, "e", [])
    port = int(url.rsplit(":", 1)[1])
    stream = {"text": "x", "stream": True, "sampling_params": {"max_new_tokens": 2}}
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().read() == b"" and conn.sock is not None
        sock = conn.sock
        conn.request("POST", "/generate", body=json.dumps(stream))
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read().endswith(b"data: [DONE]\n\n")
        conn.request("GET", "/get_load")
        assert json.loads(conn.getresponse().read())[0]["num_reqs"] == 0
        assert conn.sock is sock  # the same connection throughout
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert (response.status, response.read()) == (405, b"")
    finally:
        conn.close()
    body = json.dumps(stream).encode()
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        raw.sendall(b"POST /generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b"".join(iter(lambda: raw.recv(65536), b""))  # until the server closes
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding" not in head
    assert payload.startswith(b"data: {") and payload.endswith(b"data: [DONE]\n\n")
    assert (
        json.loads(payload.split(b"\n\n")[-3][len(b"data: ") :])["meta_info"]["completion_tokens"]
        == 2
    )


# ---------------------------------------------------------------------------- PD


def _pd_body(port: int | None, room: int = 7, tokens: int = 4) -> dict:
    return {
        "text": "the of",
        "stream": True,
        "sampling_params": {"max_new_tokens": tokens},
        "bootstrap_host": LOOPBACK,
        "bootstrap_port": port,
        "bootstrap_room": room,
    }


def test_decode_requires_bootstrap_fields(procs: Processes) -> None:
    url = start_ready(procs, "d", ["--disaggregation-mode", "decode"])
    status, out = post_json(url + "/generate", {"text": "x"})
    assert status == 400 and "bootstrap_host" in out["error"]["message"]


def test_decode_fails_clearly_when_nobody_listens_on_the_bootstrap_port(procs: Processes) -> None:
    url = start_ready(procs, "d", ["--disaggregation-mode", "decode"])
    dead = free_port()
    body = dict(_pd_body(dead), stream=False)
    status, out = post_json(url + "/generate", body)
    assert status == 500
    assert (
        f"cannot connect to the prefill bootstrap server at {LOOPBACK}:{dead}"
        in (out["error"]["message"])
    )


def test_decode_waits_for_the_paired_prefill_room(procs: Processes) -> None:
    boot = free_port()
    prefill_args = [
        "--disaggregation-mode",
        "prefill",
        "--disaggregation-bootstrap-port",
        str(boot),
    ]
    slow_prefill = ["--load-seconds", "0.2", "--ttft-base-ms", "400", "--tpot-ms", "10"]
    prefill = start_ready(procs, "p", prefill_args, slow_prefill)
    decode = start_ready(procs, "d", ["--disaggregation-mode", "decode"], FAST)
    body = _pd_body(boot, room=12345)
    prefill_events: list[str] = []
    thread = threading.Thread(
        target=lambda: prefill_events.extend(sse_events(prefill + "/generate", body))
    )
    start = time.monotonic()
    thread.start()
    events = sse_events(decode + "/generate", body)
    elapsed = time.monotonic() - start
    thread.join(5)
    first = json.loads(prefill_events[0])
    assert first["meta_info"]["completion_tokens"] == 1 and prefill_events[-1] == "[DONE]"
    assert json.loads(events[-2])["meta_info"]["completion_tokens"] == 4
    assert elapsed >= 0.4  # decode's own TTFT base is 5 ms: it waited for prefill's room


# ---------------------------------------------------------------------------- vLLM and Python 3.8


def test_vllm_form_serves_openai_routes(procs: Processes) -> None:
    port = free_port()
    server = ["serve", "/models/q", "--port", str(port), "--host", LOOPBACK]
    server += ["--served-model-name", "q", "--tensor-parallel-size", "2"]
    engine = procs.start(
        "v", [sys.executable, str(engine_module.__file__), "--engine", "vllm", *FAST, "--", *server]
    )
    url = f"http://{LOOPBACK}:{port}"
    wait_status(url + "/health")
    engine.wait_for_log("Application startup complete.")
    assert get_json(url + "/v1/models")["data"][0]["id"] == "q"
    status, out = post_json(url + "/v1/completions", {"model": "q", "prompt": "a", "max_tokens": 2})
    assert status == 200 and out["usage"]["completion_tokens"] == 2
    assert post_json(url + "/v1/completions", {"model": "other", "prompt": "a"})[0] == 404
    assert request("POST", url + "/generate", {"text": "a"})[0] == 404
    assert b"vllm:generation_tokens_total" in request("GET", url + "/metrics")[1]


def _python38() -> str | None:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which("python3.8"), *glob.glob(f"{root}/versions/3.8*/bin/python3.8")]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except OSError:
            continue
        if out.stdout.strip() == "(3, 8)":
            return candidate
    return None


def test_engine_runs_on_python_38(procs: Processes) -> None:
    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here (the engine must run on 3.8 hosts)")
    port = free_port()
    procs.engine("e38", ["--port", str(port)], FAST, python=python)
    url = f"http://{LOOPBACK}:{port}"
    wait_status(url + "/health")
    events = sse_events(
        url + "/generate", {"text": "x", "stream": True, "sampling_params": {"max_new_tokens": 3}}
    )
    assert json.loads(events[-2])["meta_info"]["completion_tokens"] == 3


def _ignore_errors(func, *args) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        func(*args)
