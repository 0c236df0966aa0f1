"""The bench role's modules, run by `toolkit bench` on the bench host: build the rehearsal's
offline tokenizer and dataset, look at the host (client, endpoint, dataset), and run one
point of the benchmark. They drive the command's `BenchSession` (executor/bench.py), which
keeps what a sweep shares between points; the role's task list says which steps run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.host.protocol import Result
from toolkit.playbook.load import Task
from toolkit.tasks.base import ControllerModule, HostCtx, RunCtx, register

if TYPE_CHECKING:
    from toolkit.executor.bench import BenchSession

POINT_MODULE = "bench_serving"


class _BenchModule(ControllerModule):
    local = True

    def run_local(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Result]:
        self.step(run.shared["bench"], run)
        return []  # the session prints its own lines

    def step(self, bench: BenchSession, run: RunCtx) -> None:
        raise NotImplementedError


@register
class BenchInputs(_BenchModule):
    """A rehearsal's tokenizer and dataset, built by the bench host's own Python."""

    name = "bench_inputs"

    def step(self, bench: BenchSession, run: RunCtx) -> None:
        bench.prepare_rehearsal()


@register
class BenchPreflight(_BenchModule):
    """Which client is installed, that the endpoint answers, where prompts come from."""

    name = "bench_preflight"

    def step(self, bench: BenchSession, run: RunCtx) -> None:
        bench.preflight()


@register
class BenchServing(_BenchModule):
    """One benchmark point: the client with live output, its result fetched back."""

    name = POINT_MODULE

    def step(self, bench: BenchSession, run: RunCtx) -> None:
        extra, label, local_dir = run.shared["point"]
        run.shared["result"] = bench.run_point(extra, label, local_dir)
