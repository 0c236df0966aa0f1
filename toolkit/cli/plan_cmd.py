"""`toolkit plan`: print what `up` would launch on every node, without touching a host."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from toolkit.cli.options import inventory_option, make_plan, profile_options
from toolkit.preflight.check_flags import local_options, translate_plan
from toolkit.render.plan_text import render_plan
from toolkit.render.scripts import write_scripts


@click.command("plan")
@profile_options
@inventory_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sh"]),
    default="text",
    show_default=True,
    help="text: a readable view; json: the plan contract; sh: one bash script per node.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for --format sh scripts (default: ./plan-<profile>).",
)
@click.option(
    "--translate-flags",
    is_flag=True,
    help="Apply known flag renames for the engine installed here (listed as notes).",
)
def command(
    profile: str,
    overrides: tuple[str, ...],
    profiles_dirs: tuple[Path, ...],
    inventory: Path,
    fmt: str,
    out: Path | None,
    translate_flags: bool,
) -> None:
    """Plan PROFILE on INVENTORY: ranks, ports, env, argv, router wiring, benchmark."""
    plan = make_plan(inventory, profile, overrides, profiles_dirs)
    if translate_flags:
        options = local_options(plan.engine)
        plan, _ = translate_plan(plan, dict.fromkeys(plan.hosts, options))
    console = Console()
    if fmt == "json":
        click.echo(plan.to_json())
    elif fmt == "sh":
        paths = write_scripts(plan, out or Path(f"plan-{plan.profile}"))
        for path in paths:
            click.echo(str(path))
    else:
        render_plan(plan, console)
