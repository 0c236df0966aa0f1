"""File modules the engine roles use: write a run's files, remove its secrets, read a file
back, tail logs."""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import base64
import hashlib
import os

from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result


def file_state(path: str) -> dict:
    """sha256 and mode of a regular file; {"exists": False} when there is none."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return {"exists": False}
    return {"exists": True, "sha256": digest, "mode": "%o" % (st.st_mode & 0o7777)}


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Create with the final mode, so a secret is never readable even briefly, and rename
    into place, so a reader never sees a half-written file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)  # the umask may have narrowed os.open's mode
    os.replace(tmp, path)


@register
class WriteFiles(Module):
    """A run's files (launch scripts, records): each written when its content or mode
    differs, in one task so a launch costs one result line."""

    name = "write_files"

    def facts(self, args: dict) -> dict:
        return {"files": {item["path"]: file_state(item["path"]) for item in args["files"]}}

    def decide(self, args: dict, facts: dict) -> Decision:
        stale = []
        for item in args["files"]:
            want = hashlib.sha256(base64.b64decode(item["b64"])).hexdigest()
            have = facts["files"][item["path"]]
            mode = item.get("mode", "600").lstrip("0") or "0"
            if not have["exists"] or have["sha256"] != want or have["mode"] != mode:
                stale.append(item["path"])
        if not stale:
            return Decision.ok("%d files up to date" % len(args["files"]))
        return Decision.change("write %d files" % len(stale), actions=stale)

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        by_path = {item["path"]: item for item in args["files"]}
        for path in decision.actions:
            item = by_path[path]
            try:
                write_atomic(path, base64.b64decode(item["b64"]), int(item.get("mode", "600"), 8))
            except OSError as exc:
                return Result(self.name, "failed", "cannot write %s: %s" % (path, exc))
        return Result(
            self.name,
            "changed",
            "wrote %d files" % len(decision.actions),
            data={"paths": decision.actions},
        )


@register
class Remove(Module):
    """Files that must go (launch scripts hold secrets); one that cannot be removed fails."""

    name = "remove"

    def facts(self, args: dict) -> dict:
        return {"present": [p for p in args["paths"] if os.path.lexists(p)]}

    def decide(self, args: dict, facts: dict) -> Decision:
        if not facts["present"]:
            return Decision.ok("nothing to remove")
        return Decision.change("remove %d files" % len(facts["present"]), actions=facts["present"])

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        errors = []
        for path in decision.actions:
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append("%s: %s" % (path, exc.strerror))
        if errors:
            return Result(self.name, "failed", "cannot remove " + "; ".join(errors))
        return Result(self.name, "changed", "removed %d files" % len(decision.actions))


@register
class ReadFile(Module):
    """A file's bytes back to the control side (records, benchmark results)."""

    name = "read_file"

    def facts(self, args: dict) -> dict:
        try:
            with open(args["path"], "rb") as fh:
                return {"b64": base64.b64encode(fh.read()).decode()}
        except OSError as exc:
            return {"error": str(exc)}

    def decide(self, args: dict, facts: dict) -> Decision:
        if "error" in facts:
            return Decision.fail("cannot read %s: %s" % (args["path"], facts["error"]))
        return Decision.ok("", data={"b64": facts["b64"]})


@register
class Tail(Module):
    """The last lines of each log."""

    name = "tail"

    def facts(self, args: dict) -> dict:
        from toolkit.host.facts import tail

        return {"lines": {p: tail(p, int(args["lines"])) for p in args["paths"]}}

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.ok("", data={"lines": facts["lines"]})
