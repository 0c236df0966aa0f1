"""Options shared by the commands that connect to hosts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from toolkit import names


def host_key_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--accept-new-host-keys",
        is_flag=True,
        help="Record unknown SSH host keys (like OpenSSH's accept-new); changed keys still fail.",
    )(func)


def _run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A run id names directories on every host: validated before anything uses it."""
    if value is None:
        return None
    try:
        return names.check_run_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--run", "run_id", callback=_run_id, help="A run id (default: the current run)."
    )(func)
