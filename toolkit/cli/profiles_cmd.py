"""`toolkit profiles [NAME]`: list the profiles, or show one fully resolved."""

from __future__ import annotations

from pathlib import Path

import click
import yaml
from rich.console import Console
from rich.table import Table

from toolkit.profiles import available, load_profile, shown


@click.command("profiles")
@click.argument("name", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", hidden=True)
@click.option(
    "--profiles-dir",
    "profiles_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Extra directory of profiles.",
)
def command(name: str | None, overrides: tuple[str, ...], profiles_dirs: tuple[Path, ...]) -> None:
    """List the shipped and user profiles, or print NAME after inheritance and --set.

    Secret values (env names such as HF_TOKEN, flags such as --api-key) print masked."""
    console = Console()
    if name:
        profile = load_profile(name, overrides, extra_dirs=profiles_dirs)
        console.print(yaml.safe_dump(shown(profile), sort_keys=False), end="", markup=False)
        return
    table = Table(title="profiles", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    for column in ("engine", "hardware", "cards", "mode", "dataset", "target TPOT"):
        table.add_column(column, justify="right" if column == "cards" else "left")
    for profile_name in available(profiles_dirs):
        p = load_profile(profile_name, extra_dirs=profiles_dirs)
        tpot = f"{p.meta.target_tpot_ms:g} ms" if p.meta.target_tpot_ms else "—"
        table.add_row(
            profile_name,
            p.engine,
            p.meta.hardware,
            str(p.meta.cards),
            p.meta.mode,
            p.meta.dataset,
            tpot,
        )
    console.print(table)
