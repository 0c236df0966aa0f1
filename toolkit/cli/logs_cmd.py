"""`toolkit logs [TARGET]`: the logs of a host, a role or one process."""

from __future__ import annotations

import click
from rich.console import Console

from toolkit.cli.run_options import host_key_option, run_option
from toolkit.executor import state
from toolkit.executor.inspect import logs


@click.command("logs")
@click.argument("target", required=False)
@click.option("-n", "--lines", default=50, show_default=True, help="Lines from the end.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@run_option
@host_key_option
def command(
    target: str | None, lines: int, follow: bool, run_id: str | None, accept_new_host_keys: bool
) -> None:
    """TARGET: a host, a role (prefill, decode, mixed, router) or a process (prefill0.1)."""
    logs(state.load(run_id), target, lines, follow, Console(), accept_new_host_keys)
