"""Profile resolution, inheritance, overrides, and errors that name file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ProfileError
from toolkit.profiles import available, load_profile

SHIPPED = sorted(available())


def test_shipped_profiles_are_listed_and_bases_are_not() -> None:
    assert "a3-1p1d-64k" in SHIPPED
    assert not [name for name in SHIPPED if name.startswith("_")]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_validates_and_names_its_seed(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    # The cpu profiles are toolkit's own smoke tests, from no seed recipe.
    assert profile.meta.seed.endswith(".txt") or profile.platform == "cpu"
    assert profile.roles


def test_unknown_name_lists_the_closest() -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'a3-1p1d-46k'; closest: a3-1p1d-64k"):
        load_profile("a3-1p1d-46k")


def test_set_overrides_any_parameter_including_dotted_sysctl_names() -> None:
    profile = load_profile(
        "a3-1p1d-64k",
        [
            "roles.prefill.args.mem-fraction-static=0.7",
            "tuning.sysctl.vm.swappiness=10",
            "router.port=7000",
            "roles.decode.args.prefill-round-robin-balance=false",
        ],
    )
    assert profile.roles["prefill"].args["mem-fraction-static"] == 0.7
    assert profile.tuning.sysctl["vm.swappiness"] == 10
    assert profile.router is not None and profile.router.port == 7000
    assert profile.roles["decode"].args["prefill-round-robin-balance"] is False


def test_override_of_unknown_key_names_the_set_option() -> None:
    with pytest.raises(ProfileError) as err:
        load_profile("a3-1p1d-64k", ["roles.prefill.nnodez=3"])
    assert "--set roles.prefill.nnodez=3: roles.prefill.nnodez: unknown key 'nnodez'" in str(
        err.value
    )
    assert "did you mean 'nnodes'" in str(err.value)


def test_user_profile_file_extends_a_shipped_profile(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "extends: a3-1p1d-64k\nroles:\n  decode:\n    args: {max-running-requests: 48}\n"
    )
    profile = load_profile(str(path))
    assert profile.name == "mine"
    assert profile.roles["decode"].args["max-running-requests"] == 48
    assert profile.roles["decode"].args["tp-size"] == 32  # inherited


def test_unknown_key_in_a_file_points_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("extends: a3-1p1d-64k\nroles:\n  prefill:\n    bootstrap_prot: 9000\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    message = str(err.value)
    assert f"{path}:4: roles.prefill.bootstrap_prot: unknown key 'bootstrap_prot'" in message
    assert "did you mean 'bootstrap_port'" in message


def test_planned_flags_cannot_be_written_as_args(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("extends: a3-1p1d-64k\nroles:\n  decode:\n    args: {node-rank: 1}\n")
    with pytest.raises(ProfileError, match="--node-rank is planned per node"):
        load_profile(str(path))


def test_profiles_dir_shadows_shipped_names(tmp_path: Path) -> None:
    (tmp_path / "a3-1p1d-64k.yaml").write_text(
        "extends: _a3-1p1d-pp\nmeta: {title: mine, dataset: x}\nbench: {args: {num-prompts: 2}}\n"
    )
    profile = load_profile("a3-1p1d-64k", extra_dirs=[tmp_path])
    assert profile.meta.title == "mine"


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(str(tmp_path / "a.yaml"))


def test_set_adds_a_sysctl_that_is_not_in_the_profile() -> None:
    profile = load_profile("rtx6000-glm5-nvfp4", ["tuning.sysctl.vm.swappiness=0"])
    assert profile.tuning.sysctl == {"vm.swappiness": 0}


def test_null_env_drops_an_inherited_variable(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: a3-1p1d-64k\nenv: {STREAMS_PER_DEVICE: null}\n")
    from toolkit.inventory import parse_inventory
    from toolkit.planner import build_plan

    inv = parse_inventory(
        "all:\n  vars: {model_path: /m}\n  children:\n    prefill: {hosts: {a: {}, b: {}}}\n"
        "    decode: {hosts: {c: {}, d: {}}}\n",
        "i.yaml",
    )
    plan = build_plan(inv, load_profile(str(path)))
    assert "STREAMS_PER_DEVICE" not in plan.nodes[0].env
    assert plan.nodes[0].env["SGLANG_SET_CPU_AFFINITY"] == "1"


def test_slo_takes_exactly_one_bound(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: a3-1p1d-64k\nslo: [{metric: output_throughput}]\n")
    with pytest.raises(ProfileError, match="give exactly one of max or min"):
        load_profile(str(path))
