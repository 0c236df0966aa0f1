"""`--collective` / `--collective-backend`, shared by `check` and `up`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def collective_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--collective-backend",
        type=click.Choice(["auto", "nccl", "hccl", "gloo"]),
        default="auto",
        show_default=True,
        help="auto: nccl on CUDA, hccl on Ascend, gloo (CPU) with --rehearse.",
    )(func)
    return click.option(
        "--collective/--no-collective",
        default=None,
        help="Run an all-reduce/all-gather per instance over the planned interface "
        "(default: the profile's collective.by_default, else off).",
    )(func)
