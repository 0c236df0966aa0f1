"""`playbooks/bench.yaml` for `toolkit bench`: the bench role's tasks before `bench_serving`
run once, the rest once per point of a sweep (the modules are in toolkit/tasks/bench.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError
from toolkit.playbook.engine import play_roles, run_play
from toolkit.playbook.facts import host_vars
from toolkit.playbook.load import Role, RoleSearch, load_playbook, playbook_path
from toolkit.tasks.base import HostCtx, RunCtx
from toolkit.tasks.bench import POINT_MODULE

if TYPE_CHECKING:
    from toolkit.executor.bench import BenchRun, BenchSession


class BenchPlaybook:
    """`playbooks/bench.yaml` for one `toolkit bench`: the tasks before `bench_serving` once,
    the rest once per point of a sweep."""

    def __init__(self, bench: BenchSession) -> None:
        plan = bench.plan
        path = playbook_path("bench")
        plays = load_playbook(path, {"engine": plan.engine, "platform": plan.platform})
        if len(plays) != 1 or plays[0].hosts != "bench":
            raise ToolkitError(f"{path}: the bench playbook is one play on the bench host")
        self.play = plays[0]
        roles = play_roles(self.play, RoleSearch.from_env())
        self.before, self.each = _split(roles)
        self.run = RunCtx(
            bench.cluster, plan, bench.record, bench.recap, bench.console,
            rehearse=bench.record.rehearse,
        )  # fmt: skip
        self.run.shared["bench"] = bench
        work, name = bench.work, bench.host_name
        facts = host_vars(plan, work, bench.record.run_id, rehearse=bench.record.rehearse,
                          check=False, tunes_machine=False)  # fmt: skip
        self.hosts = {name: HostCtx(name, work, bench.session, facts)}

    def before_points(self) -> None:
        self._play(self.before)

    def point(self, extra: dict[str, Any], label: str, local_dir: Path) -> BenchRun:
        self.run.shared["point"] = (extra, label, local_dir)
        self.run.shared.pop("result", None)
        self._play(self.each)
        if "result" not in self.run.shared:
            raise ToolkitError("the bench role ran no `bench_serving` task: nothing was measured")
        result: BenchRun = self.run.shared["result"]
        return result

    def _play(self, roles: list[Role]) -> None:
        outcome = run_play(self.play, roles, self.hosts, self.run)
        if outcome.failed:
            raise ToolkitError(f"{self.play.name} failed on {', '.join(self.hosts)} (see above)")


def _split(roles: list[Role]) -> tuple[list[Role], list[Role]]:
    """The roles' tasks before the first `bench_serving`, and from it on."""
    before: list[Role] = []
    each: list[Role] = []
    for role in roles:
        if each:
            each.append(role)
            continue
        modules = [t.module for t in role.tasks]
        if POINT_MODULE not in modules:
            before.append(role)
            continue
        at = modules.index(POINT_MODULE)
        before.append(Role(role.name, role.folder, role.defaults, role.tasks[:at]))
        each.append(Role(role.name, role.folder, role.defaults, role.tasks[at:]))
    return before, each
