"""`toolkit up`: launch a profile on an inventory and wait until it serves."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from toolkit.cli.collective_options import collective_options
from toolkit.cli.options import inventory_option, make_plan, profile_options
from toolkit.cli.run_options import host_key_option
from toolkit.executor.up import UpOptions, up


@click.command("up")
@profile_options
@inventory_option()
@click.option("--rehearse", is_flag=True, help="Start the rehearsal engine instead of the model.")
@click.option("--check", is_flag=True, help="Show what would change on the hosts; change nothing.")
@click.option("--keep-on-failure", is_flag=True, help="Leave the processes running on failure.")
@click.option("--timeout", type=float, help="Readiness timeout in seconds (default: profile).")
@click.option("--tpot-ms", type=float, help="Rehearsal: simulated time per output token.")
@click.option("--load-seconds", type=float, help="Rehearsal: simulated weight-loading time.")
@click.option("--skip-check", is_flag=True, help="Launch without running `toolkit check` first.")
@click.option(
    "--translate-flags", is_flag=True, help="Launch with known flag renames applied (see check)."
)
@click.option(
    "--playbook",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run this playbook instead of the shipped playbooks/up.yaml.",
)
@click.option(
    "--roles-dir",
    "roles_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of your own roles (searched before toolkit's; also $TOOLKIT_ROLES_DIR).",
)
@click.option(
    "--skip-tags",
    "skip_tags",
    multiple=True,
    help="Skip the tasks with this tag (repeatable), as ansible-playbook --skip-tags.",
)
@collective_options
@host_key_option
def command(
    profile: str,
    overrides: tuple[str, ...],
    profiles_dirs: tuple[Path, ...],
    inventory: Path,
    rehearse: bool,
    check: bool,
    keep_on_failure: bool,
    timeout: float | None,
    tpot_ms: float | None,
    load_seconds: float | None,
    skip_check: bool,
    translate_flags: bool,
    collective: bool | None,
    collective_backend: str,
    accept_new_host_keys: bool,
    playbook: Path | None,
    roles_dirs: tuple[Path, ...],
    skip_tags: tuple[str, ...],
) -> None:
    """Check, tune the hosts, launch every node, wait for /health, start the router, smoke."""
    if skip_check and translate_flags:
        raise click.UsageError("--translate-flags reads each host's engine in the check")
    extra = list(overrides)
    if tpot_ms is not None:
        extra.append(f"rehearsal.tpot_ms={tpot_ms}")
    if load_seconds is not None:
        extra.append(f"rehearsal.load_seconds={load_seconds}")
    plan = make_plan(inventory, profile, tuple(extra), profiles_dirs)
    options = UpOptions(
        rehearse=rehearse,
        check=check,
        accept_new_host_keys=accept_new_host_keys,
        keep_on_failure=keep_on_failure,
        timeout_s=timeout,
        skip_check=skip_check,
        translate_flags=translate_flags,
        collective=collective,
        collective_backend=collective_backend,
        playbook=playbook,
        roles_dirs=roles_dirs,
        skip_tags=frozenset(skip_tags),
    )
    up(plan, options, Console())
    sys.exit(0)
