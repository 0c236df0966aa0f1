"""Roles and playbooks are valid data: every task registered, every role present."""

from __future__ import annotations

import pytest

from toolkit.errors import ToolkitError
from toolkit.host.agent import MODULES
from toolkit.resources import data_dir
from toolkit.roles import TASKS, load_playbook, load_role

ROLES = sorted(p.name for p in data_dir("roles").iterdir() if p.is_dir())


def test_the_roles_the_design_names_exist() -> None:
    assert set(ROLES) >= {
        "cpu_tuning",
        "ascend_env",
        "cuda_env",
        "sglang_server",
        "vllm_server",
        "router",
        "bench",
    }


@pytest.mark.parametrize("name", ROLES)
def test_each_role_names_only_registered_tasks(name: str) -> None:
    role = load_role(name)
    assert role.tasks, f"role {name} runs no task"
    for task in role.tasks:
        kind, _, target = TASKS[task].partition(":")
        if kind == "agent":
            assert target in MODULES, f"{task} → agent op {target} does not exist"


@pytest.mark.parametrize("playbook", ["up", "bench", "down"])
@pytest.mark.parametrize(("engine", "platform"), [("sglang", "ascend"), ("vllm", "cuda")])
def test_playbooks_resolve_for_every_engine_and_platform(
    playbook: str, engine: str, platform: str
) -> None:
    plays = load_playbook(playbook, {"engine": engine, "platform": platform})
    assert plays
    assert all(role in ROLES for play in plays for role in play.roles)


def test_up_runs_tuning_before_servers_before_the_router() -> None:
    plays = load_playbook("up", {"engine": "sglang", "platform": "ascend"})
    order = [role for play in plays for role in play.roles]
    assert order == ["cpu_tuning", "ascend_env", "sglang_server", "router"]


def test_a_playbook_naming_an_unknown_fact_is_an_error() -> None:
    with pytest.raises(ToolkitError, match="names a fact"):
        load_playbook("up", {"engine": "sglang"})
