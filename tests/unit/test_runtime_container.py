"""Container command lines rendered from plans: docker and podman, launch and rehearsal.

Pure: plans from shipped profiles and plain inventories, compared with the argv the seeds
write. No runtime is called.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_planner import plan_for
from toolkit import rehearsal
from toolkit.errors import PlanError
from toolkit.executor.containers import script_options
from toolkit.executor.state import RunRecord
from toolkit.inventory import parse_inventory
from toolkit.plan import plan_from_dict
from toolkit.planner import build_plan
from toolkit.profiles import load_profile
from toolkit.render.scripts import ScriptOptions, node_script
from toolkit.runtime import container as rt
from toolkit.runtime import preflight
from toolkit.tasks.serving import rehearsal_argv
from toolkit.tasks.serving import script_options as node_options

RUN = "20261201-000000-x-ab12"
MIXED = """
all:
  children:
    mixed: {hosts: {b200: {ansible_host: 10.0.0.1}}}
"""
SEED_002_IMAGE_AND_AFTER = (
    "vllm/vllm-openai:v0.16.0 zai-org/GLM-5-FP8 --tensor-parallel-size 8 "
    "--max-model-len 32768 --gpu-memory-utilization 0.90 --trust-remote-code"
)


def _plan(profile: str, inventory: str = MIXED, overrides: tuple[str, ...] = ()):
    return build_plan(parse_inventory(inventory, "inv.yaml"), load_profile(profile, overrides))


def _launch(node, runtime_env_file: str = "/w/runs/R/mixed0.0.env") -> list[str]:
    assert node.container is not None
    return rt.run_argv(
        node.container, run_id=RUN, node=node.name, host_tag="b200@10.0.0.1",
        env_file=runtime_env_file,
    )  # fmt: skip


def _labels(node: str) -> list[str]:
    return [
        "--label", f"toolkit.run={RUN}", "--label", f"toolkit.node={node}",
        "--label", "toolkit.host=b200@10.0.0.1",
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_seed_002_runs_as_its_docker_command(runtime: str) -> None:
    plan = _plan("b200-glm5-fp8-vllm", overrides=(f"container.runtime={runtime}",))
    argv = _launch(plan.nodes[0])
    assert argv == [
        runtime, "run", "--name", f"tk-{RUN}-mixed0.0", *_labels("mixed0.0"),
        "--network", "host", "--env-file", "/w/runs/R/mixed0.0.env",
        "-v", "/var/tmp/toolkit:/var/tmp/toolkit",
        "--ipc=host", "-v", "/root/.cache/huggingface:/root/.cache/huggingface",
        "--gpus", "all",
        "vllm/vllm-openai:v0.16.0", "zai-org/GLM-5-FP8",
        "--max-model-len", "32768", "--gpu-memory-utilization", "0.90",
        "--trust-remote-code", "--tensor-parallel-size", "8",
    ]  # fmt: skip
    # The seed's words after the image, in any order (it writes --model before the model).
    image_at = argv.index("vllm/vllm-openai:v0.16.0")
    assert sorted(argv[image_at:]) == sorted(shlex.split(SEED_002_IMAGE_AND_AFTER))


def test_seed_002_rehearsal_keeps_the_image_and_wiring_and_runs_the_engine_inside(
    tmp_path: Path,
) -> None:
    plan = _plan("b200-glm5-fp8-vllm")
    node = plan.nodes[0]
    record = RunRecord(run_id=RUN, plan={}, rehearse=True, started=0.0)
    engine = f"/var/tmp/toolkit/runs/{RUN}/rehearsal/{rehearsal.ENGINE_ENTRY}"
    argv = rehearsal_argv(plan, node, engine, plan.rehearsal)
    options = node_options(record, "b200@10.0.0.1", node.name, argv)
    options = script_options(options, node, argv, f"/var/tmp/toolkit/runs/{RUN}/m.env")
    script = node_script(plan, node, options)
    path = tmp_path / "node.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    words = shlex.split(exec_line.replace('"$env_file"', "ENV").replace('"${mounts[@]}"', "M"))
    assert words[1:3] == ["docker", "run"]
    assert "--gpus" not in words  # no GPUs in a rehearsal; the other options stay
    assert words[words.index("--entrypoint") + 1] == "python3"
    image_at = words.index("vllm/vllm-openai:v0.16.0")
    assert "--ipc=host" in words[:image_at] and words[image_at + 1] == engine
    assert words[-8:] == [
        "zai-org/GLM-5-FP8", "--max-model-len", "32768", "--gpu-memory-utilization", "0.90",
        "--trust-remote-code", "--tensor-parallel-size", "8",
    ]  # fmt: skip
    assert rehearsal.ENGINE_ENTRY == "engine.py"
    # Mounts that exist on the host are added by the script (the workdir holds the engine),
    # the recipe's volumes too.
    assert "if [ -e /var/tmp/toolkit ]; then mounts+=(-v /var/tmp/toolkit:/var/tmp/toolkit)" in (
        script
    )
    cache = "/root/.cache/huggingface"
    assert f"if [ -e {cache} ]; then mounts+=(-v {cache}:{cache}); fi" in script
    assert "-v" not in words  # nothing mounted unconditionally


def test_seed_001_replaces_the_entrypoint_with_the_planned_sglang() -> None:
    plan = plan_for("rtx6000-glm5-nvfp4")
    node = plan.nodes[0]
    argv = _launch(node)
    image_at = argv.index("lmsysorg/sglang:dev-cu13")
    before = argv[:image_at]
    for option in ("--ipc=host", "--shm-size=8g", "--gpus"):
        assert option in before
    assert before[before.index("--ulimit") : before.index("--ulimit") + 4] == [
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
    ]
    assert before[-2:] == ["--entrypoint", "python3"]
    assert argv[image_at + 1 :] == node.argv[1:]  # -m sglang.launch_server ... as planned
    assert before[before.index("-v") : before.index("-v") + 2] == ["-v", "/models/m:/models/m"]


def test_sourced_files_are_sourced_inside_the_image() -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("container.runtime=podman", "container.image=i:1"))
    node = plan.nodes[0]
    assert node.container is not None and node.container.entrypoint == "bash"
    script, arg0 = node.container.command[1], node.container.command[2]
    assert script.startswith("source /usr/local/Ascend/ascend-toolkit/set_env.sh; ")
    assert script.endswith('exec "$@"') and arg0 == "toolkit"
    assert node.container.command[3:] == ["python3", *node.argv[1:]]
    assert "/usr/local/Ascend/ascend-toolkit/set_env.sh" in node.container.mounts
    # The Ascend base hands over every NPU and the driver.
    devices = node.container.devices
    assert "/dev/davinci15" in devices and "/usr/local/Ascend/driver:/usr/local/Ascend/driver" in (
        devices
    )


def test_container_plan_is_in_the_json_contract_and_round_trips() -> None:
    plan = plan_for("a3-1p1d-64k", overrides=("container.runtime=docker", "container.image=i:1"))
    data = json.loads(plan.to_json())
    box = data["nodes"][0]["container"]
    assert box["runtime"] == "docker" and box["image"] == "i:1" and box["pull"] == "missing"
    assert box["name"] == "tk-{run}-prefill0.0"
    assert plan_from_dict(plan.to_dict()).nodes[0].container == plan.nodes[0].container
    bare = json.loads(plan_for("a3-1p1d-64k").to_json())
    assert bare["nodes"][0]["container"] is None


def test_seed_004_asks_for_its_image_by_name() -> None:
    with pytest.raises(PlanError) as err:
        _plan("rtxpro6000-glm52-reap-vllm")
    message = str(err.value)
    assert "voipmonitor/vllm:black-benediction-" in message
    assert "--set container.image=" in message and "container.runtime=none" in message
    host = _plan("rtxpro6000-glm52-reap-vllm", overrides=("container.runtime=none",))
    assert host.nodes[0].container is None
    given = _plan("rtxpro6000-glm52-reap-vllm", overrides=("container.image=v:b12x",))
    box = given.nodes[0].container
    assert box is not None and box.entrypoint == "/opt/venv/bin/python"  # the image's venv
    assert box.command[:3] == ["-m", "vllm.entrypoints.cli.main", "serve"]


def test_inventory_container_runtime_wins_and_is_checked() -> None:
    bare = MIXED.replace(
        "ansible_host: 10.0.0.1", "ansible_host: 10.0.0.1, container_runtime: none"
    )
    assert _plan("b200-glm5-fp8-vllm", bare).nodes[0].container is None
    podman = bare.replace("container_runtime: none", "container_runtime: podman")
    assert _plan("b200-glm5-fp8-vllm", podman).nodes[0].container.runtime == "podman"
    image = podman.replace("container_runtime: podman", "container_image: mine/vllm:1")
    assert _plan("b200-glm5-fp8-vllm", image).nodes[0].container.image == "mine/vllm:1"
    with pytest.raises(PlanError, match="use docker, podman or none"):
        _plan("b200-glm5-fp8-vllm", bare.replace("none", "lxc"))


def test_secrets_go_to_the_env_file_not_the_command_line(tmp_path: Path) -> None:
    plan = _plan("b200-glm5-fp8-vllm", overrides=("env.HF_TOKEN=hf_abcdefgh",))
    script = node_script(plan, plan.nodes[0], ScriptOptions())
    assert "hf_abcdefgh" not in script  # `plan --format sh`: read from the environment
    assert 'printf \'%s=%s\\n\' "$name" "${!name}"\ndone > "$env_file"' in script
    assert "umask 077" in script
    path = tmp_path / "s.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_container_names_are_valid_for_any_profile_file_name() -> None:
    box = plan_for("a3-1p1d-64k", overrides=("container.runtime=podman", "container.image=i"))
    container = box.nodes[0].container
    assert container is not None
    assert rt.container_name(container, "20261201-x-my recipe+v2-ab12") == (
        "tk-20261201-x-my-recipe-v2-ab12-prefill0.0"
    )


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_stop_ps_and_logs_commands(runtime: str) -> None:
    script = rt.stop_script(runtime, RUN, "h1@10.0.0.1", 20)
    assert f"{runtime} ps -aq --filter label=toolkit.run={RUN} --filter " in script
    assert "label=toolkit.host=h1@10.0.0.1" in script
    assert f"{runtime} stop -t 20 $ids" in script and f"{runtime} rm -f $ids" in script
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert rt.ps_argv(runtime, RUN) == [
        runtime, "ps", "-a", "--filter", f"label=toolkit.run={RUN}",
        "--format", "{{.Names}}\t{{.Status}}",
    ]  # fmt: skip
    assert rt.logs_argv(runtime, "tk-x", 5, follow=True) == [
        runtime, "logs", "--tail", "5", "-f", "tk-x",
    ]  # fmt: skip


@pytest.mark.parametrize("runtime", ["docker", "podman"])
@pytest.mark.parametrize("pull", ["missing", "always", "never"])
def test_probe_script_is_valid_bash(runtime: str, pull: str) -> None:
    script = preflight.probe_script(runtime, ["a/b:1"], pull, "h@1", RUN, gpus=True, ascend=True)
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert ("pull a/b:1" in script) == (pull != "never")


def test_preflight_findings_from_probe_output() -> None:
    text = "\n".join(
        [
            "runtime\tDocker version 27.1.1, build 6312585",
            "image\tvllm/vllm-openai:v0.16.0\tpulled",
            "image\tother:1\tabsent",
            "leftover\ttk-20261130-101010-old-1234-mixed0.0",
            "gpu\tnone",
            "device\t/dev/davinci_manager\tmissing",
        ]
    )
    found = preflight.findings("docker", "never", text)
    statuses = [status for status, _, _ in found]
    assert statuses == ["ok", "changed", "failed", "failed", "failed", "failed"]
    assert "container.pull is never" in found[2][1]
    assert "older run" in found[3][1] and "toolkit down -i" in found[3][2]
    assert "NVIDIA Container Toolkit" in found[4][2]
    assert preflight.findings("podman", "missing", "runtime\tmissing")[0][0] == "failed"
    failed_pull = "progress\tTrying to pull a/b:1...\nprogress\tError: unauthorized\n"
    failed_pull += "image\ta/b:1\tpull-failed:125"
    (finding,) = preflight.findings("podman", "missing", failed_pull)
    assert finding[0] == "failed" and "pull-failed:125: Error: unauthorized" in finding[1]
    assert "nvidia-ctk cdi generate" in preflight.findings("podman", "missing", "gpu\tnone")[0][2]
    # Check mode pulls nothing: an absent image the policy would pull is "would pull".
    would = preflight.findings("podman", "missing", "image\ta/b:1\tabsent", check=True)
    assert would == [("changed", "would pull a/b:1", "")]


def test_podman_leaves_out_shm_size_beside_host_ipc() -> None:
    docker = plan_for("rtx6000-glm5-nvfp4").nodes[0].container
    podman = plan_for("rtx6000-glm5-nvfp4", overrides=("container.runtime=podman",))
    assert docker is not None and "--shm-size=8g" in docker.options
    box = podman.nodes[0].container
    assert box is not None and "--ipc=host" in box.options
    assert not any(word.startswith("--shm-size") for word in box.options)


def test_a_value_with_a_newline_stops_the_launch_script_by_name(tmp_path: Path) -> None:
    plan = _plan("b200-glm5-fp8-vllm", overrides=('env.BAD="one\\ntwo"',))
    options = ScriptOptions(inline_secrets=True, env_file=str(tmp_path / "n.env"))
    path = tmp_path / "node.sh"
    path.write_text(node_script(plan, plan.nodes[0], options))
    ran = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 1
    assert "BAD holds a newline; an env file cannot carry it" in ran.stderr
