"""Kernel tuning modules: the CPU frequency governor and sysctls, and restoring both."""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import glob
import os

from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return " ".join(fh.read().split())
    except OSError:
        return None


def _write(path: str, value: str) -> str | None:
    """None when written, else why not."""
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as exc:
        return "cannot write %s: %s" % (path, exc)
    return None


GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"


@register
class CpuGovernor(Module):
    """Every CPU's scaling governor set to `value`; the previous values are returned so
    `down` can restore them."""

    name = "cpu_governor"

    def facts(self, args: dict) -> dict:
        paths = sorted(glob.glob(args.get("glob") or GOVERNOR_GLOB))
        return {"governors": {p: _read(p) for p in paths}}

    def decide(self, args: dict, facts: dict) -> Decision:
        if not isinstance(args.get("value"), str) or not args["value"]:
            return Decision.fail("cpu_governor: give `value`, a governor such as performance")
        current, want = facts["governors"], args["value"]
        if not current:
            return Decision.skip("no cpufreq on this host (a VM?)")
        unreadable = [p for p, v in current.items() if v is None]
        if unreadable:
            return Decision.fail("cannot read %s" % unreadable[0])
        differ = sorted(p for p, v in current.items() if v != want)
        if not differ:
            return Decision.ok("governor is %s on %d CPUs" % (want, len(current)))
        return Decision.change(
            "set governor %s on %d CPUs" % (want, len(differ)),
            actions=differ,
            before=sorted(set(current.values())),
            after=want,
            data={"previous": {p: current[p] for p in differ}},
        )

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result | list[Result]:
        written = {}
        for path in decision.actions:
            error = _write(path, args["value"])
            if error:
                # What was written before the failure is still returned: it must be restored.
                return Result(self.name, "failed", error, data={"previous": written})
            written[path] = decision.data["previous"][path]
        return decision.result(self.name)


@register
class Sysctl(Module):
    """One kernel parameter under /proc/sys, compared without regard to whitespace."""

    name = "sysctl"

    def label(self, args: dict) -> str:
        return "sysctl %s" % args.get("key", "")

    def problem(self, args: dict) -> str | None:
        key, value = args.get("key"), args.get("value")
        if not isinstance(key, str) or not key.strip("./"):
            return "sysctl: give `key`, a name such as vm.swappiness"
        if value is None or isinstance(value, (dict, list)):
            return "sysctl: give `value` for %s (a number or a string)" % key
        return None

    def facts(self, args: dict) -> dict:
        if self.problem(args):
            return {}
        path = "/proc/sys/" + args["key"].replace(".", "/")
        return {"exists": os.path.exists(path), "value": _read(path)}

    def decide(self, args: dict, facts: dict) -> Decision:
        problem = self.problem(args)
        if problem:
            return Decision.fail(problem)
        key, want = args["key"], str(args["value"])
        path = "/proc/sys/" + key.replace(".", "/")
        if not facts["exists"]:
            return Decision.skip("%s does not exist on this kernel" % path)
        if facts["value"] is None:
            return Decision.fail("cannot read %s" % path)
        if facts["value"] == " ".join(want.split()):
            return Decision.ok("%s is %s" % (key, facts["value"]))
        return Decision.change("set %s" % key, before=facts["value"], after=want)

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result | list[Result]:
        path = "/proc/sys/" + args["key"].replace(".", "/")
        error = _write(path, str(args["value"]))
        if error:
            return Result(self.label(args), "failed", error)
        return decision.result(self.label(args))


@register
class Restore(Module):
    """Put back the governor and sysctl values recorded when `up` changed them."""

    name = "restore"

    def facts(self, args: dict) -> dict:
        governor = {p: _read(p) for p in args.get("governor", {})}
        sysctl = {k: _read("/proc/sys/" + k.replace(".", "/")) for k in args.get("sysctl", {})}
        return {"governor": governor, "sysctl": sysctl}

    def decide(self, args: dict, facts: dict) -> Decision:
        writes = [
            ("governor", path, value)
            for path, value in sorted(args.get("governor", {}).items())
            if facts["governor"].get(path) != value
        ] + [
            ("sysctl", key, str(value))
            for key, value in sorted(args.get("sysctl", {}).items())
            if facts["sysctl"].get(key) != " ".join(str(value).split())
        ]
        if not writes:
            return Decision.ok("nothing to restore")
        return Decision.change("restore %d values" % len(writes), actions=writes)

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result | list[Result]:
        out = []
        governors = [a for a in decision.actions if a[0] == "governor"]
        failed = [e for e in (_write(p, v) for _, p, v in governors) if e]
        if failed:
            out.append(Result("restore governor", "failed", failed[0]))
        elif governors:
            out.append(Result("restore governor", "changed", "restored %d CPUs" % len(governors)))
        for _, key, value in (a for a in decision.actions if a[0] == "sysctl"):
            error = _write("/proc/sys/" + key.replace(".", "/"), value)
            task = "restore sysctl " + key
            out.append(Result(task, "failed", error) if error else Result(task, "changed", value))
        return out
