"""`toolkit check`: the preflight, on every host at once; exit 1 on any ✘."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from toolkit.cli.collective_options import collective_options
from toolkit.cli.options import inventory_option, make_plan, profile_options
from toolkit.cli.run_options import host_key_option
from toolkit.executor.check import CheckOptions, check
from toolkit.render.check import render_check


@click.command("check")
@profile_options
@inventory_option()
@click.option(
    "--rehearse", is_flag=True, help="Check for a rehearsal: skip accelerators, model, flags."
)
@click.option(
    "--translate-flags", is_flag=True, help="Check the flags after applying known renames."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the table and fixes; json: every finding.",
)
@collective_options
@host_key_option
def command(
    profile: str,
    overrides: tuple[str, ...],
    profiles_dirs: tuple[Path, ...],
    inventory: Path,
    rehearse: bool,
    translate_flags: bool,
    fmt: str,
    collective: bool | None,
    collective_backend: str,
    accept_new_host_keys: bool,
) -> None:
    """Preflight PROFILE on INVENTORY: SSH, engine, cards, NIC, ports, model, flags, paths,
    and with --collective an all-reduce per instance over the planned interface."""
    plan = make_plan(inventory, profile, overrides, profiles_dirs)
    options = CheckOptions(
        rehearse, translate_flags, accept_new_host_keys, collective, collective_backend
    )
    report = check(plan, options)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_check(report, Console())
    sys.exit(0 if report.ok else 1)
