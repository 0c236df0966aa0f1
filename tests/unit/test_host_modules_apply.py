"""The host modules acting for real, in a temporary directory and on loopback: what the
fixtures say a module would do, it does, and a second run finds nothing to do. No SSH."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.host import facts as host
from toolkit.host.agent import handle
from toolkit.host.protocol import Op, Result


def one(module: str, args: dict, check: bool = False) -> Result:
    results = handle([Op(module, args)], check)
    assert len(results) == 1, results
    return results[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- command


def test_command_runs_once_behind_creates(tmp_path: Path) -> None:
    args = {"argv": ["touch", "done"], "chdir": str(tmp_path), "creates": "done"}
    first = one("command", args)
    assert (first.status, first.data["rc"]) == ("changed", 0)
    assert (tmp_path / "done").exists()
    second = one("command", args)
    assert (second.status, second.msg) == ("ok", "done exists")


def test_command_has_chdir_and_env_and_no_shell(tmp_path: Path) -> None:
    out = one(
        "command",
        {
            "cmd": "sh -c 'pwd; echo $GREETING' '$HOME'",
            "chdir": str(tmp_path),
            "env": {"GREETING": "hi there"},
        },
    )
    assert out.status == "changed", out
    assert out.data["stdout"].splitlines() == [str(tmp_path), "hi there"]
    literal = one("command", {"cmd": "echo $HOME '|' ; x"})
    assert literal.data["stdout"] == "$HOME | ; x\n"  # no shell: words only


def test_a_failing_command_fails_with_its_stderr() -> None:
    out = one("shell", {"cmd": "echo progress; echo 'wheel not found: engine-9.9' >&2; exit 3"})
    assert out.status == "failed"
    assert out.msg.startswith("exit status 3 from echo progress;")
    assert out.msg.endswith(": wheel not found: engine-9.9")
    assert (out.data["rc"], out.data["stdout"]) == (3, "progress\n")


def test_a_program_that_does_not_exist_fails_naming_it() -> None:
    out = one("command", {"argv": ["no-such-program-here"]})
    assert out.status == "failed" and "cannot run no-such-program-here" in out.msg


def test_output_is_kept_as_a_bounded_tail() -> None:
    out = one("shell", {"cmd": "head -c 200000 /dev/zero | tr '\\0' x; echo END"})
    assert out.status == "changed"
    assert out.data["stdout_bytes"] == 200004
    assert len(out.data["stdout"]) <= 8192 and out.data["stdout"].endswith("xEND\n")


def test_past_timeout_the_whole_process_group_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = f"sleep 60 & echo $! > {pidfile}; echo started >&2; wait"
    out = one("shell", {"cmd": cmd, "timeout_s": 1})
    assert out.status == "failed"
    assert out.msg.startswith("killed after timeout_s 1") and out.msg.endswith(": started")
    child = int(pidfile.read_text())
    assert not host.alive(child)


# -------------------------------------------------------------------------------- copy


def test_copy_writes_once_then_is_ok_and_changes_mode_in_place(tmp_path: Path) -> None:
    dest = tmp_path / "site.conf"
    args = {"dest": str(dest), "b64": b64(b"a=1\n"), "mode": "0600"}
    first = one("copy", args)
    assert first.status == "changed" and first.after["mode"] == "600"
    assert dest.read_bytes() == b"a=1\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert one("copy", args).status == "ok"
    inode = dest.stat().st_ino
    chmod = one("copy", {**args, "mode": "0640"})
    assert (chmod.status, chmod.before, chmod.after) == (
        "changed",
        {"mode": "600"},
        {"mode": "640"},
    )
    assert dest.stat().st_ino == inode  # same content: not rewritten
    rewrite = one("copy", {**args, "b64": b64(b"a=2\n"), "mode": "0640"})
    assert rewrite.status == "changed" and set(rewrite.after) == {"sha256"}
    assert dest.read_bytes() == b"a=2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["site.conf"]  # no temporary left


def test_copy_needs_makedirs_for_a_missing_directory(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "x"
    args = {"dest": str(dest), "b64": b64(b"x")}
    refused = one("copy", args)
    assert refused.status == "failed" and str(tmp_path / "a" / "b") in refused.msg
    assert not (tmp_path / "a").exists()
    assert one("copy", {**args, "makedirs": True}).status == "changed"
    assert dest.read_bytes() == b"x"


def test_copy_in_check_mode_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    out = one("copy", {"dest": str(dest), "b64": b64(b"x")}, check=True)
    assert (out.status, out.msg) == ("changed", f"would create {dest}")
    assert not dest.exists()


# -------------------------------------------------------------------------------- file


def test_file_states_reach_their_state_once(tmp_path: Path) -> None:
    d = tmp_path / "cache" / "weights"
    assert one("file", {"path": str(d), "state": "directory", "mode": "0750"}).status == "changed"
    assert stat.S_IMODE(d.stat().st_mode) == 0o750
    assert one("file", {"path": str(d), "state": "directory", "mode": "0750"}).status == "ok"

    f = d / "ready"
    assert one("file", {"path": str(f), "state": "touch"}).status == "changed"
    assert f.is_file()
    assert one("file", {"path": str(f), "state": "touch"}).status == "ok"
    assert one("file", {"path": str(f), "mode": "0600"}).status == "changed"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600

    link = tmp_path / "current"
    assert one("file", {"path": str(link), "state": "link", "src": str(d)}).status == "changed"
    assert os.readlink(link) == str(d)
    assert one("file", {"path": str(link), "state": "link", "src": str(d)}).status == "ok"
    moved = one("file", {"path": str(link), "state": "link", "src": str(f)})
    assert (moved.status, moved.before, os.readlink(link)) == ("changed", str(d), str(f))

    gone = one("file", {"path": str(tmp_path / "cache"), "state": "absent"})
    assert gone.status == "changed" and not (tmp_path / "cache").exists()
    assert one("file", {"path": str(tmp_path / "cache"), "state": "absent"}).status == "ok"


def test_a_link_to_a_directory_is_that_directory_unless_the_state_is_link(tmp_path: Path) -> None:
    (tmp_path / "nfs").mkdir()
    (tmp_path / "models").symlink_to(tmp_path / "nfs")
    models = str(tmp_path / "models")
    assert one("file", {"path": models, "state": "directory"}).status == "ok"
    assert (
        one("file", {"path": models, "state": "link", "src": str(tmp_path / "nfs")}).status == "ok"
    )
    assert one("file", {"path": models, "state": "absent"}).status == "changed"
    assert (tmp_path / "nfs").is_dir()  # the link went, not what it pointed to


def test_file_in_check_mode_changes_nothing(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    out = one("file", {"path": str(keep), "state": "absent"}, check=True)
    assert (out.status, out.msg) == ("changed", f"would remove directory {keep}")
    assert keep.is_dir()


# ---------------------------------------------------------------------------- wait_for


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_wait_for_an_open_and_a_closed_port(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert one("wait_for", {"port": port}).status == "ok"
    listener.close()
    assert one("wait_for", {"port": port, "state": "stopped"}).status == "ok"
    late = one("wait_for", {"port": port, "timeout_s": 0.5, "interval_s": 0.1})
    assert late.status == "failed"
    assert late.msg.endswith(f"waiting for 127.0.0.1:{port} to open; last saw: Connection refused")


def test_wait_for_polls_until_the_port_opens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open_later() -> None:
        time.sleep(0.5)
        server.bind(("127.0.0.1", port))
        server.listen()

    thread = threading.Thread(target=open_later)
    thread.start()
    try:
        out = one("wait_for", {"port": port, "timeout_s": 30, "interval_s": 0.1})
    finally:
        thread.join()
        server.close()
    assert out.status == "ok" and "open after" in out.msg


def test_wait_for_a_url_status() -> None:
    class Teapot(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(418 if self.path == "/tea" else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Teapot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert one("wait_for", {"url": base + "/health"}).status == "ok"
        assert one("wait_for", {"url": base + "/tea", "status": 418}).status == "ok"
        out = one("wait_for", {"url": base + "/tea", "timeout_s": 0.3, "interval_s": 0.1})
        assert out.status == "failed" and out.msg.endswith("last saw: HTTP 418")
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------- start and stop


def test_start_then_stop_a_real_process(tmp_path: Path) -> None:
    script = tmp_path / "node.sh"
    script.write_text("echo up\nexec sleep 60\n")
    pidfile = tmp_path / "node.pid"
    start = {
        "name": "node",
        "script": str(script),
        "pidfile": str(pidfile),
        "log": str(tmp_path / "node.log"),
    }
    started = one("start", start)
    assert started.status == "changed"
    pid = started.data["pid"]
    try:
        assert host.alive(pid)
        again = one("start", start)
        assert (again.status, again.msg) == ("ok", f"already running as pid {pid}")
        stop = {"pidfiles": [str(pidfile)], "only_pidfiles": True, "grace": 10}
        stopped = one("stop", stop)
        assert stopped.status == "changed", stopped
        assert not host.alive(pid)
        assert one("stop", stop).status == "ok"
    finally:
        if host.alive(pid):
            os.killpg(pid, 9)
