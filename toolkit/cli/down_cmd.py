"""`toolkit down`: stop the current run (or the runs recorded on an inventory's hosts)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from toolkit.cli.run_options import host_key_option, run_option
from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.down import down_from_hosts, down_from_record
from toolkit.inventory import load_inventory


@click.command("down")
@click.option(
    "-i",
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Find the run on the inventory's hosts (no local state needed): the active one, or --run.",
)
@run_option
@click.option("--keep-tuning", is_flag=True, help="Leave the host tuning as `up` set it.")
@host_key_option
def command(
    inventory: Path | None, run_id: str | None, keep_tuning: bool, accept_new_host_keys: bool
) -> None:
    """Stop every process of the run, verify ports are free, restore tuning, keep logs."""
    console = Console()
    if inventory is not None:
        hosts = load_inventory(inventory)
        ok = down_from_hosts(hosts, console, keep_tuning, accept_new_host_keys, run_id)
        sys.exit(0 if ok else 1)
    try:
        record = state.load(run_id)
    except ToolkitError as exc:
        console.print(f"nothing to stop: {exc}")
        return
    ok = down_from_record(record, console, keep_tuning, accept_new_host_keys)
    sys.exit(0 if ok else 1)
