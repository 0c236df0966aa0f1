"""`toolkit status`: every process of the run, alive or not, and its health."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from toolkit.cli.run_options import host_key_option, run_option
from toolkit.executor import state
from toolkit.executor.inspect import status


@click.command("status")
@run_option
@host_key_option
def command(run_id: str | None, accept_new_host_keys: bool) -> None:
    """A table per process: alive, /health, port, uptime, log path. Exit 1 if unhealthy."""
    healthy = status(state.load(run_id), Console(), accept_new_host_keys)
    sys.exit(0 if healthy else 1)
