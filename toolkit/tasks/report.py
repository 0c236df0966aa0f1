"""What a failed node looks like on the terminal: its command, env (secrets masked) and the
last lines of its log."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from toolkit import shell
from toolkit.host.protocol import Result
from toolkit.secrets import mask_argv, mask_env, mask_text


def show_failures(done: dict[str, list[Result]], procs: dict[str, Any], console: Console) -> bool:
    """Show each failed process's command and log tail; True when everything is ready."""
    ok = len(done) > 0
    for host, results in done.items():
        for item in results:
            if item.failed and item.task.startswith("ready "):
                ok = False
                name = item.task.removeprefix("ready ")
                show_failure(console, name, host, procs.get(name), item)
            elif item.failed:
                ok = False
                lines = item.data.get("log_tail") or []
                if lines:
                    console.rule(f"[bold red]{item.task} on {host} failed[/]")
                    console.print("\n".join(lines), highlight=False, markup=False)
            elif item.status == "skipped" and item.module == "wait_http":
                ok = False
    return ok


def show_failure(console: Console, name: str, host: str, node: Any, entry: Result) -> None:
    env = getattr(node, "env", {})
    argv = getattr(node, "argv", [])
    command = mask_text(shell.join(mask_argv(argv)), env) if argv else "(unknown)"
    console.rule(f"[bold red]{name} on {host} failed[/]")
    console.print(Text("command: ", style="bold") + Text(command), highlight=False)
    if env:
        masked = mask_env(env)
        console.print(
            "[bold]env:[/] " + " ".join(f"{k}={v}" for k, v in masked.items()), highlight=False
        )
    lines = entry.data.get("log_tail") or []
    if lines:
        console.print(f"[bold]last {len(lines)} log lines:[/]")
        console.print(mask_text("\n".join(lines), env), highlight=False, markup=False)
