"""Options shared by several commands, and the one place that loads inventory + profile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from toolkit.inventory import load_inventory
from toolkit.plan import Plan
from toolkit.planner import build_plan
from toolkit.profiles import load_profile


def profile_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--profiles-dir",
        "profiles_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Extra directory of profiles (searched before the shipped ones).",
    )(func)
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a profile parameter, e.g. roles.prefill.args.mem-fraction-static=0.7.",
    )(func)
    func = click.option(
        "-p", "--profile", "profile", required=True, help="Profile name or path to a YAML file."
    )(func)
    return func


def inventory_option(required: bool = True) -> Callable[..., Any]:
    return click.option(
        "-i",
        "--inventory",
        "inventory",
        required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Ansible-format YAML inventory.",
    )


def make_plan(
    inventory: Path, profile: str, overrides: tuple[str, ...], profiles_dirs: tuple[Path, ...]
) -> Plan:
    return build_plan(
        load_inventory(inventory), load_profile(profile, overrides, extra_dirs=profiles_dirs)
    )
