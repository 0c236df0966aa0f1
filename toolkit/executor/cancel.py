"""Ctrl-C and SIGTERM for commands that change hosts: stop what was started, and say so.

Python holds a signal until the main thread runs again, and the default SIGTERM ends the
process with nothing cleaned up. Inside `signals()` both raise `Interrupted` (a
KeyboardInterrupt) in the main thread wherever it waits; fan-out (`session.parallel`) does
not wait for its workers then, so the command's own cleanup starts at once. That cleanup
runs inside `Guard.cleanup()`, where a second signal raises `Abandoned` so the user can
leave at once (and is told which command finishes the job). A short step that must not be
cut in half (starting processes whose previous tuning values are still in flight) runs
inside `Guard.deferred()`: a signal there takes effect when the step ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from rich.console import Console

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The first Ctrl-C or SIGTERM."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Abandoned(Interrupted):
    """A second signal while cleaning up: leave now."""


class Guard:
    """The signal handling of one command (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.pending: int | None = None
        self.mode = "raise"  # raise | defer | abandon
        self.deferred_what = ""

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.mode == "abandon":
            self.mode = "done"  # a third signal while we print must not interrupt the print
            raise Abandoned(signum)
        if self.mode == "done":
            return
        if self.mode == "defer":
            if self.pending is None:
                self.pending = signum
                self.console.print(
                    f"[yellow]interrupted: finishing {self.deferred_what} first "
                    "(a few seconds), then stopping it[/]"
                )
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self, what: str) -> Iterator[None]:
        """A signal inside takes effect (raises Interrupted) when the block ends."""
        self.mode, self.deferred_what = "defer", what
        try:
            yield
        finally:
            self.mode = "raise"
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    @contextlib.contextmanager
    def cleanup(self) -> Iterator[None]:
        """A signal inside raises Abandoned (once); after it, signals are ignored."""
        self.mode = "abandon"
        try:
            yield
        finally:
            self.mode = "done"

    def ignore(self) -> None:
        """From now on signals are ignored (the command is about to end anyway)."""
        self.mode = "done"


@contextlib.contextmanager
def signals(console: Console) -> Iterator[Guard]:
    """Route SIGINT and SIGTERM through a Guard for the duration (main thread only)."""
    guard = Guard(console)
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous: dict[int, Callable[..., object] | int | None] = {}
    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, guard._handle)
    try:
        yield guard
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
