"""What `up` does when a run cannot go on: a node failed, a host was lost, or the user
pressed Ctrl-C (or sent SIGTERM).

Every path ends the same way: what this run started is stopped on every host still
reachable and the tuning restored there (unless --keep-on-failure), the recap is printed,
and the message says what was left and the exact `toolkit down` command that finishes it:
processes on a host whose connection was lost keep running until that host answers again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console

from toolkit.errors import ToolkitError
from toolkit.executor import state
from toolkit.executor.cancel import Abandoned, Guard, Interrupted
from toolkit.executor.cluster import Cluster
from toolkit.executor.down import stop_run
from toolkit.plan import Plan
from toolkit.render.run import Recap

# SIGTERM, then SIGKILL after this long: a failed or interrupted run is stopped within
# seconds (a `toolkit down` gives engines longer to exit cleanly).
UNWIND_GRACE_S = 5.0


class UpFailed(ToolkitError):
    """`up` stopped; the recap above says where and why."""


def down_command(record: state.RunRecord) -> str:
    return f"toolkit down --run {record.run_id}"


def _leftovers(cluster: Cluster, record: state.RunRecord) -> str:
    lost = cluster.lost
    if not lost:
        return ""
    return (
        f"; {', '.join(lost)} could not be reached, so its processes may still run: "
        f"`{down_command(record)}` stops them once it answers"
    )


def on_failure(
    cluster: Cluster,
    plan: Plan,
    record: state.RunRecord,
    recap: Recap,
    keep: bool,
    console: Console,
    guard: Guard,
) -> None:
    """A phase failed after launch: stop the run (or keep it), then raise UpFailed."""
    if keep:
        guard.ignore()
        state.save(record)
        console.print(recap.table())
        raise UpFailed(
            f"run {record.run_id} failed; processes kept (--keep-on-failure): inspect with "
            f"`toolkit status` / `toolkit logs`, stop with `{down_command(record)}`"
        )
    with _cleanup(record, console, guard):
        console.print(
            f"[yellow]stopping every node of the run on {', '.join(cluster.reachable)}[/]"
        )
        _stop(cluster, plan, record, recap)
    console.print(recap.table())
    raise UpFailed(f"run {record.run_id} failed and was stopped{_leftovers(cluster, record)}")


def on_interrupt(
    cluster: Cluster,
    plan: Plan,
    record: state.RunRecord,
    recap: Recap,
    console: Console,
    guard: Guard,
    phase: str,
    launched: bool,
    signum: int,
) -> None:
    """Ctrl-C or SIGTERM: stop what the run started; then re-raise as Interrupted."""
    if not launched:
        guard.ignore()
        cluster.interrupt()  # the phase's requests end now; their agents exit on their own
        console.print(f"[yellow]interrupted during {phase}: nothing was started[/]")
        raise Interrupted(signum)
    with _cleanup(record, console, guard):
        cluster.interrupt()
        console.print(
            f"[yellow]interrupted during {phase}: stopping run {record.run_id} on "
            f"{', '.join(cluster.reachable)} and restoring tuning (Ctrl-C again to leave "
            f"that to `{down_command(record)}`)[/]"
        )
        _stop(cluster, plan, record, recap)
    console.print(recap.table())
    stopped = "stopped" if not recap.failures() else "stopped where it could be (see above)"
    console.print(f"[yellow]run {record.run_id} {stopped}{_leftovers(cluster, record)}[/]")
    raise Interrupted(signum)


@contextlib.contextmanager
def _cleanup(record: state.RunRecord, console: Console, guard: Guard) -> Iterator[None]:
    """A second signal in here abandons the cleanup, with the command that finishes it."""
    try:
        with guard.cleanup():
            state.save(record)  # what `toolkit down --run ID` reads
            yield
    except Abandoned:
        console.print(
            f"[bold yellow]cleanup abandoned:[/] processes of run {record.run_id} may still "
            f"run; finish with: {down_command(record)}"
        )
        raise


def _stop(cluster: Cluster, plan: Plan, record: state.RunRecord, recap: Recap) -> None:
    stop_run(cluster, plan, record, recap, restore_tuning=True, grace=UNWIND_GRACE_S)
    record.stopped = time.time()
    state.save(record, make_current=False)
    state.forget_current(record.run_id)
