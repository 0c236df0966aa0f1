"""Launch scripts rendered from the plan (Jinja2 templates in `roles/*/templates/`).

The same templates serve `toolkit plan --format sh` (scripts a user can read, diff and run
by hand) and the executor (which uploads them). Every value goes through `toolkit.shell`:
quoted as a word, escaped in a comment, validated where it cannot be quoted (env names).
Secret env values are inlined only when the caller asks (the executor's owner-only
scripts); otherwise the script reads them from the environment it runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from toolkit import shell
from toolkit.plan import NodePlan, Plan, ProcessPlan, Tuning
from toolkit.resources import data_dir
from toolkit.runtime import container as runtime
from toolkit.secrets import is_secret, secret_values

TEMPLATES = {
    "sglang": "sglang_server/templates/launch.sh.j2",
    "vllm": "vllm_server/templates/launch.sh.j2",
    "router": "router/templates/router.sh.j2",
    "bench": "bench/templates/bench.sh.j2",
}
CONTAINER_TEMPLATE = "sglang_server/templates/container.sh.j2"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("roles"))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = shell.quote
    env.filters["shjoin"] = shell.join
    env.filters["comment"] = shell.comment
    env.filters["envname"] = shell.env_name
    return env


_ENV = _environment()


@dataclass(frozen=True)
class ScriptOptions:
    include_tuning: bool = True
    inline_secrets: bool = False
    run_id: str | None = None
    # Extra variables exported before the process starts (e.g. the run id).
    extra_env: tuple[tuple[str, str], ...] = ()
    # Replace the argv (the rehearsal engine stands in for the model server).
    argv: tuple[str, ...] | None = None
    # A rehearsal runs where CANN/CUDA may be absent: a missing env script is not fatal.
    optional_sources: bool = False
    # Container nodes: where the owner-only env file goes (None: a temp file), the host tag
    # labelled on the container, and a replacement (entrypoint, command) for the rehearsal.
    env_file: str | None = None
    host_tag: str | None = None
    container_command: tuple[str | None, tuple[str, ...]] | None = None


def node_script(plan: Plan, node: NodePlan, options: ScriptOptions = ScriptOptions()) -> str:
    title = (
        f"{node.name}: {node.role} instance {node.instance}, rank {node.node_rank} of "
        f"{node.nnodes}, on {node.host} ({node.address})"
    )
    if node.container is not None:
        return _container_script(plan, node, options, title)
    return _render(
        TEMPLATES[plan.engine],
        plan,
        title=title,
        address=node.address,
        tuning=node.tuning if options.include_tuning else None,
        unset_env=node.unset_env,
        source=node.source,
        nic_env=node.nic_env,
        env=node.env,
        argv=node.argv,
        options=options,
    )


def process_script(
    plan: Plan, kind: str, proc: ProcessPlan, options: ScriptOptions = ScriptOptions()
) -> str:
    return _render(
        TEMPLATES[kind],
        plan,
        title=f"{kind} on {proc.host} ({proc.address})",
        address=proc.address,
        tuning=None,
        unset_env=[],
        source=[],
        nic_env=[],
        env=proc.env,
        argv=proc.argv,
        options=options,
    )


def _render(template: str, plan: Plan, *, env: dict[str, str], argv: list[str], **kw) -> str:
    options: ScriptOptions = kw.pop("options")
    all_env = {**env, **dict(options.extra_env)}
    argv = list(options.argv) if options.argv is not None else list(argv)
    if not options.inline_secrets:
        argv = _secrets_from_env(argv, all_env)
    secrets = [] if options.inline_secrets else [k for k in all_env if is_secret(k)]
    tuning: Tuning | None = kw.pop("tuning")
    return _ENV.get_template(template).render(
        profile=plan.profile,
        run_id=options.run_id,
        tuning=tuning,
        env=all_env,
        secret_names=secrets,
        argv=argv,
        optional_sources=options.optional_sources,
        **kw,
    )


def _secrets_from_env(argv: list[str], env: dict[str, str]) -> list[str]:
    """A script kept by the user reads secret flag values (`--api-key X`, for engines that
    take it only as a flag) from TOOLKIT_SECRET_<FLAG> when it runs, like secret env values."""
    out: list[str] = list(argv)
    for index, flag, prefix in secret_values(argv):
        name = "TOOLKIT_SECRET_" + flag.lstrip("-").replace("-", "_").upper()
        env[name] = "<secret>"
        out[index] = shell.FromEnv(prefix, name)
    return out


def rehearsal_prepare_script(python: str, base: str) -> str:
    """`prepare.sh` on a rehearsal's bench host: build the tokenizer and dataset in `base`,
    where `toolkit bench` uploaded `rehearsal.BENCH_HELPERS`."""
    py = shell.quote(python)
    return (
        "set -e\n"
        f"cd {shell.quote(base)}\n"
        f"{py} tokenizer.py {shell.quote(base + '/tokenizer')} >/dev/null\n"
        f"{py} dataset.py {shell.quote(base + '/sharegpt.json')} >/dev/null\n"
    )


def _container_script(plan: Plan, node: NodePlan, options: ScriptOptions, title: str) -> str:
    """The launch script of a node that runs in a container (`toolkit.runtime` renders the
    run command; the script exports the env, writes the env file and execs it)."""
    container = node.container
    assert container is not None
    rehearse = options.optional_sources
    command = options.container_command
    run_argv = runtime.run_argv(
        container,
        run_id=options.run_id or "plan",
        node=node.name,
        host_tag=options.host_tag or f"{node.host}@{node.address}",
        env_file="$env_file",
        rehearse=rehearse,
        command=(command[0], list(command[1])) if command is not None else None,
    )
    env = {**node.env, **dict(options.extra_env)}
    at = run_argv.index("$env_file")
    return _ENV.get_template(CONTAINER_TEMPLATE).render(
        profile=plan.profile,
        run_id=options.run_id,
        title=title,
        runtime=container.runtime,
        image=container.image,
        address=node.address,
        nic_env=node.nic_env,
        env=env,
        secret_names=[] if options.inline_secrets else [k for k in env if is_secret(k)],
        env_names=[*node.nic_env, *env],
        env_file=options.env_file,
        optional_mounts=runtime.rehearsal_mounts(container) if rehearse else [],
        run_argv_head=run_argv[:at],
        run_argv_tail=run_argv[at + 1 :],
    )


def script_name(node: NodePlan) -> str:
    return f"{node.name}-{node.host}.sh".replace("/", "_").replace(":", "_")


def write_scripts(plan: Plan, out_dir: Path) -> list[Path]:
    """`toolkit plan --format sh --out DIR`: one script per node, plus router and bench."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, str]] = [
        (out_dir / script_name(node), node_script(plan, node)) for node in plan.nodes
    ]
    if plan.router is not None:
        written.append((out_dir / "router.sh", process_script(plan, "router", plan.router)))
    written.append((out_dir / "bench.sh", process_script(plan, "bench", plan.bench)))
    for path, text in written:
        path.write_text(text)
        path.chmod(0o755)
    return [p for p, _ in written]
