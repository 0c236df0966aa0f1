"""Modules about a run's place on the host: is another run active, are its planned ports
free, which interface carries its traffic, and releasing the host's pointer to it."""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import contextlib
import json
import os

from toolkit.host import facts as host
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result


@register
class ActiveRun(Module):
    """Fails when another toolkit run has live processes on this host."""

    name = "active_run"

    def facts(self, args: dict) -> dict:
        try:
            with open(os.path.join(args["workdir"], "active.json")) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            record = None
        pids = [p for p in host.run_processes(None, args["host"]) if host.alive(p)]
        return {"record": record, "running": sorted({host.run_id_of(p) for p in pids} - {None})}

    def decide(self, args: dict, facts: dict) -> Decision:
        data = {"runs": facts["running"], "record": facts["record"]}
        if facts["running"]:
            runs = ", ".join(facts["running"])
            return Decision.fail("toolkit run %s is running here" % runs, data=data)
        return Decision.ok("no toolkit run is active", data=data)


@register
class PortsFree(Module):
    """Every planned port can be bound: nothing listens on it at a clashing address."""

    name = "ports_free"

    def facts(self, args: dict) -> dict:
        return {"listening": host.listening_ports()}

    def decide(self, args: dict, facts: dict) -> Decision:
        listening = {int(k): v for k, v in facts["listening"].items()}
        busy = []
        for item in args["ports"]:
            holders = host.port_holders(item["port"], item["bind"], listening)
            if holders:
                busy.append("%s:%d (%s)" % (holders[0], item["port"], item["purpose"]))
        if busy:
            return Decision.fail("port already in use: " + ", ".join(busy))
        return Decision.ok("%d planned ports free" % len(args["ports"]))


@register
class Nic(Module):
    """The interface for HCCL/NCCL/GLOO: the inventory's `nic` if it exists, else the one
    that carries the host's address."""

    name = "nic"

    def facts(self, args: dict) -> dict:
        return {"interfaces": host.interfaces()}

    def decide(self, args: dict, facts: dict) -> Decision:
        ifaces, wanted = facts["interfaces"], args.get("nic")
        if wanted:
            if wanted not in ifaces:
                have = ", ".join(sorted(ifaces)) or "none"
                return Decision.fail(
                    "interface %s does not exist on this host (have: %s)" % (wanted, have)
                )
            return Decision.ok("using %s" % wanted, data={"nic": wanted})
        found = host.detect_nic(args["address"], ifaces)
        if found is None:
            return Decision.fail(
                "no interface holds %s; set `nic` for this host in the inventory" % args["address"]
            )
        return Decision.ok("detected %s: %s" % found, data={"nic": found[0]})


@register
class Release(Module):
    """Remove the host's pointer to its active run only when it points at this run: an old
    run's `down` must not orphan the live run's record."""

    name = "release"

    def facts(self, args: dict) -> dict:
        try:
            with open(args["path"]) as fh:
                owner = json.load(fh).get("run_id")
        except (OSError, ValueError, AttributeError):
            return {"exists": False, "owner": None}
        return {"exists": True, "owner": owner}

    def decide(self, args: dict, facts: dict) -> Decision:
        if not facts["exists"]:
            return Decision.ok("no active run recorded")
        if facts["owner"] != args["run_id"]:
            return Decision.ok("active run is %s; its record is kept" % facts["owner"])
        return Decision.change("remove the record of %s" % facts["owner"])

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result | list[Result]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(args["path"])
        return decision.result(self.name, "removed the record of %s" % args["run_id"])


@register
class PathsExist(Module):
    """A read-only assertion: these paths exist (all of them, or with `any` one of them)."""

    name = "paths_exist"

    def facts(self, args: dict) -> dict:
        return {"present": [p for p in args["paths"] if os.path.exists(p)]}

    def decide(self, args: dict, facts: dict) -> Decision:
        paths, present = list(args["paths"]), facts["present"]
        missing = [p for p in paths if p not in present]
        enough = bool(present) if args.get("any") else not missing
        if enough:
            return Decision.ok("found " + ", ".join(present))
        fix = "; fix: %s" % args["fix"] if args.get("fix") else ""
        which = "none of" if args.get("any") else "missing:"
        return Decision.fail("%s %s%s" % (which, ", ".join(missing), fix))
