"""Playbooks and roles are what runs: the shipped ones load and compile to the agent requests
`up` and `down` send, and editing them (a task removed, plays reordered, a role added)
changes those requests. No hosts: a play compiles without connecting."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from tests.unit.test_planner import SHIPPED, plan_for
from toolkit.executor import state
from toolkit.executor.cluster import Cluster, host_work
from toolkit.executor.up import UpOptions, load_up_plays
from toolkit.host.agent import MODULES as HOST_MODULES
from toolkit.plan import Plan
from toolkit.playbook.engine import compile_host, play_roles
from toolkit.playbook.facts import host_vars
from toolkit.playbook.load import (
    PlaybookError,
    RoleRef,
    RoleSearch,
    load_playbook,
    playbook_path,
)
from toolkit.render.run import Recap
from toolkit.resources import data_dir
from toolkit.tasks import MODULES
from toolkit.tasks.base import HostCtx, RunCtx

ROLES = sorted(p.name for p in data_dir("roles").iterdir() if p.is_dir())
PROFILE = "a3-1p1d-64k"


def _run(plan: Plan, rehearse: bool = True) -> RunCtx:
    console = Console(quiet=True)
    cluster = Cluster(host_work(plan), console, False)
    record = state.RunRecord("r1", plan.to_dict(), rehearse, 0.0)
    return RunCtx(cluster, plan, record, Recap(console), console, rehearse=rehearse)


def _host(run: RunCtx, name: str) -> HostCtx:
    work = run.cluster.hosts[name]
    facts = host_vars(run.plan, work, "r1", rehearse=run.rehearse, check=False, tunes_machine=True)
    return HostCtx(name, work, None, facts)  # type: ignore[arg-type] (compiling needs no session)


def _ops(run: RunCtx, roles: list, host: str) -> list[str]:
    steps, _ = compile_host(roles, _host(run, host), run)
    return [op.module for step in steps for op in step.ops]


@pytest.mark.parametrize("name", ROLES)
def test_every_task_file_names_registered_modules(name: str) -> None:
    folder = data_dir("roles") / name / "tasks"
    for path in folder.glob("*.yaml"):
        role = RoleSearch().role(RoleRef(name, path.stem), frozenset(MODULES))
        assert role.tasks or name == "cpu_env", f"{path} runs no task"


@pytest.mark.parametrize("playbook", ["up", "down"])
@pytest.mark.parametrize(
    ("engine", "platform"), [("sglang", "ascend"), ("vllm", "cuda"), ("sglang", "cpu")]
)
def test_playbooks_resolve_for_every_engine_and_platform(
    playbook: str, engine: str, platform: str
) -> None:
    plays = load_playbook(playbook_path(playbook), {"engine": engine, "platform": platform})
    search = RoleSearch()
    assert all(play_roles(play, search) for play in plays)


def test_up_compiles_to_the_requests_the_roles_list() -> None:
    plan = plan_for(PROFILE)
    run = _run(plan)
    plays = dict((p.id, roles) for p, roles in load_up_plays(plan, UpOptions(rehearse=True)))
    assert list(plays) == ["preflight", "prepare", "launch", "router"]
    host = plan.nodes[0].host
    assert _ops(run, plays["preflight"], host) == ["active_run", "ports_free", "nic"]
    # The governor and each sysctl of the profile; a rehearsal checks no CANN files.
    assert set(_ops(run, plays["prepare"], host)) == {"cpu_governor", "sysctl"}
    assert _ops(run, plays["launch"], host) == ["write_files", "start", "write_files", "wait_http"]
    assert _ops(run, plays["router"], plan.router.host) == [
        "write_files", "start", "wait_http", "http",
    ]  # fmt: skip
    # Every op the control side sends is a module the host side has.
    every = {m for p in plays.values() for h in run.cluster.hosts for m in _ops(run, p, h)}
    assert every <= set(HOST_MODULES)


def test_the_launch_play_splits_where_a_wait_begins() -> None:
    plan = plan_for(PROFILE)
    run = _run(plan)
    roles = dict((p.id, r) for p, r in load_up_plays(plan, UpOptions(rehearse=True)))["launch"]
    steps, _ = compile_host(roles, _host(run, plan.nodes[0].host), run)
    assert [[op.module for op in s.ops] for s in steps] == [
        ["write_files", "start"],
        ["write_files", "wait_http"],
    ]


def _copy_roles(tmp_path: Path) -> Path:
    folder = tmp_path / "roles"
    shutil.copytree(data_dir("roles") / "sglang_server", folder / "sglang_server")
    return folder


def test_removing_a_task_removes_it_from_what_runs(tmp_path: Path) -> None:
    folder = _copy_roles(tmp_path)
    tasks = folder / "sglang_server" / "tasks" / "main.yaml"
    kept = tasks.read_text().split("- name: wait healthy")[0]
    tasks.write_text(kept)
    plan = plan_for(PROFILE)
    plays = dict((p.id, r) for p, r in load_up_plays(plan, UpOptions(roles_dirs=(folder,))))
    assert _ops(_run(plan), plays["launch"], plan.nodes[0].host) == ["write_files", "start"]


def test_reordering_plays_reorders_the_run(tmp_path: Path) -> None:
    shipped = (data_dir("playbooks") / "up.yaml").read_text()
    blocks = shipped.split("\n- ")
    reordered = tmp_path / "up.yaml"
    reordered.write_text("- " + "\n- ".join([blocks[3], blocks[1], blocks[2], blocks[4]]) + "\n")
    plan = plan_for(PROFILE)
    plays = [p.id for p, _ in load_up_plays(plan, UpOptions(playbook=reordered))]
    assert plays == ["launch", "preflight", "prepare", "router"]


def test_a_profile_adds_user_roles_to_a_play(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "site_prep" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yaml").write_text(
        "- name: marker\n  command: {cmd: touch /tmp/x, creates: /tmp/x}\n"
        "- name: note\n  copy: {dest: '{{ run_dir }}/note', content: 'hi {{ host }}'}\n"
    )
    plan = plan_for(PROFILE, overrides=("plays.prepare=[site_prep]",))
    options = UpOptions(rehearse=True, roles_dirs=(tmp_path / "roles",))
    plays = dict((p.id, r) for p, r in load_up_plays(plan, options))
    run = _run(plan)
    host = plan.nodes[0].host
    steps, _ = compile_host(plays["prepare"], _host(run, host), run)
    ops = [op for s in steps for op in s.ops]
    assert [op.module for op in ops][-2:] == ["command", "copy"]
    assert ops[-1].args["dest"] == f"{state.run_dir(plan.nodes[0].workdir, 'r1')}/note"


def test_a_profile_naming_an_unknown_play_is_an_error() -> None:
    plan = plan_for(PROFILE, overrides=("plays.warmup=[x]",))
    with pytest.raises(PlaybookError, match=r"warmup is not a play of .*up\.yaml"):
        load_up_plays(plan, UpOptions())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- name: x\n  no_such_module: {}\n", "task 1: unknown module 'no_such_module'"),
        ("- name: x\n  command: {cmd: a}\n  copy: {}\n", "exactly one module"),
        ("- command\n", "a task is a mapping"),
        ("{}\n", "expected a list of tasks"),
    ],
)
def test_a_bad_task_names_its_file_and_task(tmp_path: Path, text: str, error: str) -> None:
    folder = tmp_path / "bad" / "tasks"
    folder.mkdir(parents=True)
    (folder / "main.yaml").write_text(text)
    with pytest.raises(PlaybookError, match=error) as caught:
        RoleSearch((tmp_path,)).role(RoleRef("bad"), frozenset(MODULES))
    assert str(folder / "main.yaml") in str(caught.value)


def test_a_missing_template_value_is_an_error_naming_the_task(tmp_path: Path) -> None:
    folder = tmp_path / "r" / "tasks"
    folder.mkdir(parents=True)
    (folder / "main.yaml").write_text("- name: x\n  command: {cmd: 'echo {{ nope }}'}\n")
    plan = plan_for(PROFILE)
    run = _run(plan)
    role = RoleSearch((tmp_path,)).role(RoleRef("r"), frozenset(MODULES))
    with pytest.raises(PlaybookError, match=r"task 1.*'nope' is undefined"):
        compile_host([role], _host(run, plan.nodes[0].host), run)


def _doc_roles(tmp_path: Path) -> Path:
    """The roles docs/roles.md shows, written out as the user would (file by file)."""
    text = (Path(__file__).parents[2] / "docs" / "roles.md").read_text()
    found = re.findall(r"`site-roles/([\w/.]+)`:\n\n```yaml\n(.*?)```", text, re.S)
    assert len(found) >= 4, "docs/roles.md lost its worked roles"
    for relative, body in found:
        path = tmp_path / "site-roles" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return tmp_path / "site-roles"


def test_the_worked_roles_in_the_docs_load_and_compile(tmp_path: Path) -> None:
    folder = _doc_roles(tmp_path)
    names = ["site_nfs", "engine_wheel", "warm_page_cache"]
    plan = plan_for(PROFILE, overrides=(f"plays.prepare=[{', '.join(names)}]",))
    plays = dict((p.id, r) for p, r in load_up_plays(plan, UpOptions(roles_dirs=(folder,))))
    run = _run(plan, rehearse=False)
    steps, _ = compile_host(plays["prepare"], _host(run, plan.nodes[0].host), run)
    ops = [op for s in steps for op in s.ops]
    by_name = {op.name: op for op in ops}
    assert by_name["nfs mount"].args["creates"] == "/mnt/models/GLM-5.1-w4a8/config.json"
    assert by_name["nfs mount"].args["argv"][-1] == "/mnt/models"
    wheel = by_name["engine wheel"].args["cmd"]
    assert "-m pip install --no-deps /mnt/models/wheels/sglang-0.5.23-py3-none-any.whl" in wheel
    assert by_name["warm page cache"].module == "shell"
    assert by_name["nfs mount point"].args["state"] == "directory"


def test_skip_tags_skips_the_tagged_tasks(tmp_path: Path) -> None:
    folder = _doc_roles(tmp_path)
    plan = plan_for(PROFILE, overrides=("plays.prepare=[warm_page_cache]",))
    plays = dict((p.id, r) for p, r in load_up_plays(plan, UpOptions(roles_dirs=(folder,))))
    run = _run(plan, rehearse=False)
    host = _host(run, plan.nodes[0].host)
    assert "shell" in [
        op.module for s in compile_host(plays["prepare"], host, run)[0] for op in s.ops
    ]
    run.skip_tags = frozenset({"warm"})
    steps, known = compile_host(plays["prepare"], host, run)
    assert "shell" not in [op.module for s in steps for op in s.ops]
    assert [r.msg for r in known if r.task == "warm page cache"] == ["--skip-tags warm"]


@pytest.mark.parametrize("profile", SHIPPED)
def test_every_shipped_profile_loads_its_up_playbook(profile: str) -> None:
    """Every engine has its `<engine>_server` role and every platform its `<platform>_env`."""
    plays = load_up_plays(plan_for(profile), UpOptions())
    assert [p.id for p, _ in plays] == ["preflight", "prepare", "launch", "router"]
