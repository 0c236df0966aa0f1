"""The `toolkit` command: a thin click layer over the library.

Each command lives in its own module, parses options, calls one library function and hands
the result to a renderer. Expected errors (ToolkitError) print one line and exit 2;
anything else is a bug: a short notice, and the traceback with --debug.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click
from rich.console import Console

from toolkit import __version__
from toolkit.errors import ToolkitError

err_console = Console(stderr=True)
# Command name → module. Loaded when invoked: `toolkit plan` should not pay for SSH and
# plotting libraries it never uses (every command starts in a fraction of a second).
COMMANDS = {
    "profiles": "toolkit.cli.profiles_cmd",
    "plan": "toolkit.cli.plan_cmd",
    "check": "toolkit.cli.check_cmd",
    "up": "toolkit.cli.up_cmd",
    "bench": "toolkit.cli.bench_cmd",
    "status": "toolkit.cli.status_cmd",
    "logs": "toolkit.cli.logs_cmd",
    "down": "toolkit.cli.down_cmd",
}


class ToolkitGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return importlib.import_module(module).command if module else None

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ToolkitError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt as exc:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(128 + getattr(exc, "signum", 2))  # 130 for Ctrl-C, 143 for SIGTERM
        except Exception:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err_console.print(
                "[bold red]internal error[/] (a bug in toolkit); rerun with --debug for the "
                "traceback"
            )
            sys.exit(1)


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, prog_name="toolkit")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Stand up, benchmark and tear down LLM serving clusters on bare metal."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def run() -> None:
    """The `toolkit` executable: `main`, then an exit without interpreter teardown.

    Tearing down the modules (pydantic, paramiko, rich) and a command's SSH sessions costs a
    few tenths of a second after the work is done; every file and record a command writes is
    closed before it returns, so only the output streams need flushing.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away (`| head`)
            stream.flush()
    os._exit(code or 0)
