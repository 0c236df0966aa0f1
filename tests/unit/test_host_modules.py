"""Every host module's decision, from JSON fixtures of facts (pyinfra's tests/operations
style): args and facts in, status, message and actions out, with no host read and no SSH.
The same cases run in check mode, which must say "would …" and act on nothing. Then the
bundle: the host package loads and answers on a bare Python that cannot see toolkit."""

from __future__ import annotations

import ast
import base64
import builtins
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import toolkit.host.agent
import toolkit.host.probe
import toolkit.host.reach  # noqa: F401
from toolkit.host import bundle
from toolkit.host.module import MODULES, Module
from toolkit.host.protocol import RESULT, Op, decode_results, encode_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "modules"
HOST_DIR = Path(bundle.__file__).resolve().parent
REPO = HOST_DIR.parents[1]
HOST_PYTHON = REPO / ".venv-host" / "bin" / "python"  # the test hosts' Python, no toolkit


def load_cases() -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        for case in json.loads(path.read_text()):
            cases.append(pytest.param(path.stem, case, id=f"{path.stem}: {case['name']}"))
    return cases


CASES = load_cases()


def plain(value: Any) -> Any:
    """As the fixture would hold it (tuples become lists, int keys strings)."""
    return json.loads(json.dumps(value))


class HostRead(AssertionError):
    pass


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise HostRead(f"decide read the host: {args[:1]!r}")


def decide_without_host(module: Module, args: dict, facts: dict, monkeypatch) -> Any:
    """`decide` with the usual ways of reading the host made to fail: it is pure."""
    with monkeypatch.context() as m:
        for owner, name in (
            (builtins, "open"),
            (os, "stat"),
            (os, "lstat"),
            (os, "listdir"),
            (os.path, "exists"),
            (os.path, "lexists"),
            (os.path, "isdir"),
            (socket, "create_connection"),
            (subprocess, "Popen"),
        ):
            m.setattr(owner, name, _refuse)
        return module.decide(copy.deepcopy(args), copy.deepcopy(facts))


def test_fixtures_are_there() -> None:
    assert len(CASES) > 100


def test_every_registered_module_has_a_fixture_file_with_two_cases() -> None:
    counts = {p.stem: len(json.loads(p.read_text())) for p in FIXTURES.glob("*.json")}
    missing = sorted(name for name in MODULES if counts.get(name, 0) < 2)
    assert not missing, f"add tests/fixtures/modules/<name>.json with 2+ cases for {missing}"
    strays = sorted(set(counts) - set(MODULES))
    assert not strays, f"fixture files for modules that are not registered: {strays}"


@pytest.mark.parametrize(("module", "case"), CASES)
def test_decide(module: str, case: dict, monkeypatch) -> None:
    decision = decide_without_host(MODULES[module], case["args"], case["facts"], monkeypatch)
    expect = case["expect"]
    assert decision.status == expect["status"], decision
    assert expect["msg"] in decision.msg, decision
    if "actions" in expect:
        assert plain(decision.actions) == expect["actions"]
    for key in ("before", "after"):
        if key in expect:
            assert plain(getattr(decision, key)) == expect[key]
    for key, value in expect.get("data", {}).items():
        assert plain(decision.data[key]) == value


@pytest.mark.parametrize(("module", "case"), CASES)
def test_check_mode_says_would_and_acts_on_nothing(module: str, case: dict, monkeypatch) -> None:
    instance = MODULES[module]
    for method in ("apply", "poll"):  # poll: wait_http's own loop
        monkeypatch.setattr(instance, method, _refuse, raising=False)
    events: list[dict] = []
    results = instance.run(
        copy.deepcopy(case["args"]), True, events.append, "", facts=copy.deepcopy(case["facts"])
    )
    assert results and not events
    if case["expect"]["status"] == "changed":
        assert all(r.msg.startswith("would ") for r in results), results
    elif type(instance).run is Module.run:  # wait_http keeps its own check mode
        assert [(r.status, r.msg) for r in results] == [
            (case["expect"]["status"], MODULES[module].decide(case["args"], case["facts"]).msg)
        ]


def test_a_label_names_the_result_in_check_mode() -> None:
    results = MODULES["command"].run({"cmd": "true"}, True, print, "install the wheel", facts={})
    assert [(r.task, r.status, r.msg) for r in results] == [
        ("install the wheel", "changed", "would run true")
    ]


def test_every_host_file_is_in_the_bundle_and_parses_as_python_3_8() -> None:
    # The collective worker and the bench helper run as files of their own, not in the agent.
    standalone = {"collective_worker", "bench_helper"}
    files = {p.stem for p in HOST_DIR.glob("*.py")} - {"__init__", "bundle"}
    assert files - standalone == set(bundle.ORDER)
    for name in sorted(files):
        source = (HOST_DIR / (name + ".py")).read_text()
        ast.parse(source, filename=name, feature_version=(3, 8))
        # Runtime-only 3.9+ APIs that the parser cannot see.
        for newer in (".removeprefix(", ".removesuffix(", "functools.cache(", "zoneinfo"):
            assert newer not in source, f"{name}.py uses {newer} (Python 3.9+)"


def test_the_bundle_answers_on_a_bare_python(tmp_path: Path) -> None:
    python = str(HOST_PYTHON) if HOST_PYTHON.exists() else sys.executable
    dest = tmp_path / "conf" / "site.conf"
    ops = [
        Op("command", {"argv": ["echo", "from the bundle"]}, name="echo"),
        Op(
            "copy",
            {"dest": str(dest), "b64": base64.b64encode(b"x=1\n").decode(), "makedirs": True},
        ),
        Op("copy", {"dest": str(dest), "b64": base64.b64encode(b"x=1\n").decode()}),
        Op("file", {"path": str(tmp_path / "conf"), "state": "directory", "mode": "0700"}),
        Op("wait_for", {"port": 1, "state": "stopped", "timeout_s": 5}),
    ]
    stdin = bundle.payload() + (encode_request(ops, False) + "\n").encode()
    # -I: no PYTHONPATH, no user site, no current directory; -S: no site-packages, so an
    # editable toolkit installed there is out of sight too.
    done = subprocess.run(
        [python, "-I", "-S", "-c", bundle.BOOTSTRAP],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith(RESULT)]
    assert len(lines) == 1, done.stdout.decode()
    results = decode_results(lines[0][len(RESULT) :])
    assert [(r.task, r.status) for r in results] == [
        ("echo", "changed"),
        (f"copy {dest}", "changed"),
        (f"copy {dest}", "ok"),
        (f"file {tmp_path / 'conf'}", "changed"),
        ("wait_for 127.0.0.1:1", "ok"),
    ]
    assert results[0].data["stdout"] == "from the bundle\n"
    assert dest.read_bytes() == b"x=1\n"
