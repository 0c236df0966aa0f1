"""Container command lines for docker and podman, rendered from the plan. Pure: no I/O.

Both runtimes take the same command-line shape for what toolkit uses (`run --name --label
--network host --env-file -v`, `ps --filter label=`, `logs`, `stop -t`, `rm -f`, `image
inspect`, `pull`), so one renderer serves both; the runtime name is the first word.

Worked example (seed 002, `b200-glm5-fp8-vllm`, entrypoint `image`, run R, node mixed0.0):

    docker run --name tk-R-mixed0.0 --label toolkit.run=R --label toolkit.node=mixed0.0
      --label toolkit.host=h1@10.0.0.1 --network host --env-file <run dir>/mixed0.0.env
      -v <workdir>:<workdir> --ipc=host -v /root/.cache/huggingface:/root/.cache/huggingface
      --gpus all vllm/vllm-openai:v0.16.0 zai-org/GLM-5-FP8 --max-model-len 32768 ...
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from itertools import pairwise

from toolkit import shell
from toolkit.errors import PlanError
from toolkit.plan import ContainerPlan
from toolkit.profile_schema import Container

RUNTIMES = ("docker", "podman")
LABEL_RUN = "toolkit.run"
LABEL_NODE = "toolkit.node"
LABEL_HOST = "toolkit.host"
NAME_FORMAT = "tk-{run}-{node}"


def split_options(options: Sequence[str]) -> list[str]:
    """Profile options (one option per item, `--gpus all`) → argv words."""
    words: list[str] = []
    for item in options:
        words += shlex.split(item)
    return words


def plan_container(
    spec: Container,
    host_runtime: str | None,
    host_image: str | None,
    *,
    profile: str,
    node: str,
    argv: list[str],
    engine_words: int,
    mounts: list[str],
    source: list[str],
) -> ContainerPlan | None:
    """The node's container, or None when it runs on the host.

    The inventory's `container_runtime` / `container_image` (per host or group) win over the
    profile's. `argv` is the planned argv ([python, -m, module, ...]); `engine_words` how
    many of its first words an image entrypoint such as `vllm serve` stands for.
    """
    runtime = host_runtime or spec.runtime
    image = host_image or spec.image
    if runtime == "none":
        return None
    if runtime not in RUNTIMES:
        raise PlanError(
            f"container_runtime {runtime!r} for {node}: use docker, podman or none "
            "(inventory variable container_runtime, or --set container.runtime=...)"
        )
    if not image:
        hint = f" ({spec.image_hint})" if spec.image_hint else ""
        raise PlanError(
            f"profile {profile} runs its engine in a container but names no image{hint}: "
            "pass --set container.image=REPOSITORY:TAG (or container_image in the "
            "inventory), or --set container.runtime=none to launch on the host"
        )
    inner = [spec.python, *argv[1:]]
    if spec.entrypoint == "image":
        entrypoint, command = None, inner[engine_words:]
        if source:
            raise PlanError(
                f"profile {profile}: container.entrypoint image cannot source "
                f"{', '.join(source)} inside the image; use entrypoint command"
            )
    else:
        entrypoint, command = command_words(inner, source, optional=False)
    return ContainerPlan(
        runtime=runtime,
        image=image,
        pull=spec.pull,
        name=NAME_FORMAT.format(run="{run}", node=node),
        options=_fit_options(runtime, split_options(spec.options)),
        devices=split_options(spec.devices),
        mounts=list(dict.fromkeys(mounts)),
        entrypoint=entrypoint,
        command=command,
        python=spec.python,
    )


def _fit_options(runtime: str, words: list[str]) -> list[str]:
    """Podman refuses `--shm-size` beside `--ipc=host` ("cannot set shmsize when running in
    the host IPC namespace"); docker accepts and ignores it, since the container then uses
    the host's /dev/shm. Seed 001 writes both, so for podman the size is left out."""
    host_ipc = "--ipc=host" in words or any(
        a == "--ipc" and b == "host" for a, b in pairwise(words)
    )
    if runtime != "podman" or not host_ipc:
        return words
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--shm-size":
            skip = True
        elif not word.startswith("--shm-size="):
            out.append(word)
    return out


def command_words(
    argv: Sequence[str], source: Sequence[str], optional: bool
) -> tuple[str, list[str]]:
    """(--entrypoint, command) that runs `argv` in the image, after sourcing `source` there.

    Without sourced files the program itself is the entrypoint; with them, bash sources
    each (the environment scripts of CANN or CUDA live in the image or its mounts) and
    then execs the argv, which follows as bash's positional arguments.
    """
    if not source:
        return argv[0], list(argv[1:])
    steps = []
    for path in source:
        q = shell.quote(path)
        if optional:
            steps.append(f"if [ -f {q} ]; then source {q}; fi")
        else:
            steps.append(f"source {q}")
    return "bash", ["-c", "; ".join([*steps, 'exec "$@"']), "toolkit", *argv]


def container_name(container: ContainerPlan, run_id: str) -> str:
    return safe_name(container.name.format(run=run_id))


def safe_name(text: str) -> str:
    """Docker and podman take [a-zA-Z0-9][a-zA-Z0-9_.-]* as a name; a user's profile file
    name (inside the run id) may hold other characters."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text)


def labels(run_id: str, node: str, host_tag: str) -> dict[str, str]:
    return {LABEL_RUN: run_id, LABEL_NODE: node, LABEL_HOST: host_tag}


def run_argv(
    container: ContainerPlan,
    *,
    run_id: str,
    node: str,
    host_tag: str,
    env_file: str,
    rehearse: bool = False,
    command: tuple[str | None, list[str]] | None = None,
) -> list[str]:
    """`<runtime> run` for one node, attached (the launch script's process follows the
    container: its output is the node's log, its exit is the container's).

    A rehearsal leaves out `devices` (there are no GPUs or NPUs to hand over) and the
    same-path mounts (its launch script mounts only those that exist on the host);
    `command` replaces the planned entrypoint and command (the rehearsal engine).
    """
    argv = [container.runtime, "run", "--name", container_name(container, run_id)]
    for key, value in labels(run_id, node, host_tag).items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--network", "host", "--env-file", env_file]
    if not rehearse:
        argv += [*mount_words(container.mounts), *container.options]
    else:
        argv += split_volumes(container.options)[0]
    if not rehearse:
        argv += container.devices
    planned = (container.entrypoint, container.command)
    entrypoint, words = command if command is not None else planned
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return [*argv, container.image, *words]


def split_volumes(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options → (the options without volumes, each `-v`/`--volume` spec)."""
    rest: list[str] = []
    volumes: list[str] = []
    taking = False
    for word in words:
        if taking:
            volumes.append(word)
            taking = False
        elif word in ("-v", "--volume"):
            taking = True
        elif word.startswith("--volume="):
            volumes.append(word.removeprefix("--volume="))
        else:
            rest.append(word)
    return rest, volumes


def rehearsal_mounts(container: ContainerPlan) -> list[tuple[str, str]]:
    """(host path, volume spec) of every mount, for a rehearsal's launch script to mount
    where the host path exists: a rehearsal host need not have the model, the CANN
    scripts or the recipe's cache directory (docker would create a missing one; podman
    refuses to start)."""
    same = [(path, f"{path}:{path}") for path in container.mounts]
    return same + [(spec.split(":", 1)[0], spec) for spec in split_volumes(container.options)[1]]


def mount_words(paths: Sequence[str]) -> list[str]:
    words: list[str] = []
    for path in paths:
        words += ["-v", f"{path}:{path}"]
    return words


def label_filter(run_id: str, host_tag: str | None = None) -> list[str]:
    words = ["--filter", f"label={LABEL_RUN}={run_id}"]
    if host_tag is not None:
        words += ["--filter", f"label={LABEL_HOST}={host_tag}"]
    return words


def ps_argv(runtime: str, run_id: str, host_tag: str | None = None) -> list[str]:
    """Every container of the run on this host, running or not: name and status (`Up 5
    minutes`, `Exited (1) ...`; docker and podman agree on .Status, not on .State)."""
    fmt = "{{.Names}}\t{{.Status}}"
    return [runtime, "ps", "-a", *label_filter(run_id, host_tag), "--format", fmt]


def logs_argv(runtime: str, name: str, lines: int, follow: bool = False) -> list[str]:
    return [runtime, "logs", "--tail", str(lines), *(["-f"] if follow else []), name]


def stop_script(runtime: str, run_id: str, host_tag: str, grace: float) -> str:
    """Stop (grace period, then kill) and remove every container of the run on this host,
    found by label; exit 1 naming any that is still there afterwards."""
    rt = shell.quote(runtime)
    ps = shell.join([runtime, "ps", "-aq", *label_filter(run_id, host_tag)])
    return "\n".join(
        [
            f"command -v {rt} >/dev/null || {{ echo 'no {runtime} here'; exit 0; }}",
            f"ids=$({ps})",
            'if [ -z "$ids" ]; then echo "no container of the run"; exit 0; fi',
            f"{rt} stop -t {int(grace)} $ids >/dev/null 2>&1",
            f"{rt} rm -f $ids >/dev/null 2>&1",
            f"left=$({ps})",
            'if [ -n "$left" ]; then echo "still present: $left"; exit 1; fi',
            'echo "stopped and removed $(echo $ids | wc -w) container(s)"',
        ]
    )
