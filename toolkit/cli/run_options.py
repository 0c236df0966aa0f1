"""Options shared by the commands that connect to hosts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def host_key_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--accept-new-host-keys",
        is_flag=True,
        help="Record unknown SSH host keys (like OpenSSH's accept-new); changed keys still fail.",
    )(func)


def run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--run", "run_id", help="A run id (default: the current run).")(func)
