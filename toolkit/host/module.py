"""The contract every host-side module keeps, and the registry the agent dispatches on.

A module reads the host (`facts`, read-only), decides from the facts alone (`decide`, pure:
a test gives it a fixture instead of a host) and only then acts (`apply`). So each module
reports Ansible's way: ok when nothing differs, skipped with the reason, failed, or changed
with before/after; and check mode is one rule for all of them: decide, say "would …", stop.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

from dataclasses import dataclass, field

# typing's Callable: collections.abc.Callable cannot be subscripted at run time before 3.9.
from typing import Any, Callable  # noqa: UP035

from toolkit.host.protocol import Result

Emit = Callable[[dict], None]  # streams a progress event to the control side


@dataclass
class Decision:
    """What a module would do: `status` "changed" means act (what `actions` lists, said by
    `msg`); ok / skipped / failed are final and carry the reason in `msg`."""

    status: str
    msg: str = ""
    actions: list = field(default_factory=list)
    before: Any = None
    after: Any = None
    data: dict = field(default_factory=dict)

    @classmethod
    def change(cls, msg: str, actions: list | None = None, **kw: Any) -> Decision:
        return cls("changed", msg, actions or [], **kw)

    @classmethod
    def ok(cls, msg: str, **kw: Any) -> Decision:
        return cls("ok", msg, **kw)

    @classmethod
    def skip(cls, msg: str, **kw: Any) -> Decision:
        return cls("skipped", msg, **kw)

    @classmethod
    def fail(cls, msg: str, **kw: Any) -> Decision:
        return cls("failed", msg, **kw)

    def result(self, task: str, msg: str | None = None) -> Result:
        return Result(
            task,
            self.status,
            self.msg if msg is None else msg,
            self.before,
            self.after,
            dict(self.data),
        )


class Module:
    """Subclass, set `name`, override `decide` (and `facts`, `apply` where it reads or acts)."""

    name = ""
    # Modules whose work is the action itself (start a process, wait, run a command) still
    # decide first, so check mode and fixtures cover them too.

    def facts(self, args: dict) -> dict:
        return {}

    def decide(self, args: dict, facts: dict) -> Decision:
        raise NotImplementedError

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result | list[Result]:
        """Carry `decision` out; the default reports it done (for modules that only read)."""
        return decision.result(self.label(args))

    def label(self, args: dict) -> str:
        return self.name

    def run(
        self, args: dict, check: bool, emit: Emit, label: str = "", facts: dict | None = None
    ) -> list[Result]:
        """Decide, then act unless `check`; `facts` given (a test's fixture) replaces
        reading the host."""
        task = label or self.label(args)
        decision = self.decide(args, self.facts(args) if facts is None else facts)
        if decision.status != "changed":
            return [decision.result(task)]
        if check:
            return [decision.result(task, "would " + decision.msg)]
        done = self.apply(args, decision, emit)
        results = done if isinstance(done, list) else [done]
        for item in results:
            if label and item.task == self.label(args):
                item.task = label
        return results


MODULES: dict[str, Module] = {}


def register(cls: type) -> type:
    """Class decorator: one instance per module name."""
    if cls.name in MODULES:
        raise ValueError("module %s registered twice" % cls.name)
    MODULES[cls.name] = cls()
    return cls
