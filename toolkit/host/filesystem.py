"""`copy` and `file`: the user's files and directories on the host, Ansible's way.

Both read the path with lstat (a link is a link, never silently followed), compare content
(sha256), mode and owner with what the task asks, and act only on a difference. `copy`
writes through `files.write_atomic`: a reader never sees a half-written file and a secret is
never readable under a wider mode, even briefly.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import base64
import binascii
import contextlib
import grp
import hashlib
import os
import pwd
import stat

from toolkit.host.files import write_atomic
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

NEW_FILE_MODE = "644"  # a new file's mode when the task gives none (Ansible: umask decides)
STATES = ("file", "directory", "absent", "touch", "link")


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)  # no name for it on this host: compare by number


def path_state(path: str, digest: bool = False, follow: bool = False) -> dict:
    """type (file, directory, link, other; None when absent), mode, owner, group, and the
    sha256 of a regular file's content when `digest`, the target of a link. With `follow`,
    a link reads as what it points to."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return {"type": None}
    except OSError as exc:  # a parent that is a file, no permission to look
        return {"type": None, "error": exc.strerror or str(exc)}
    if stat.S_ISLNK(st.st_mode):
        kind = "link"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    else:
        kind = "file" if stat.S_ISREG(st.st_mode) else "other"
    out = {
        "type": kind,
        "mode": "%o" % stat.S_IMODE(st.st_mode),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
    }
    if kind == "link":
        out["target"] = os.readlink(path)
    if kind == "file" and digest:
        with open(path, "rb") as fh:
            out["sha256"] = hashlib.sha256(fh.read()).hexdigest()
    return out


def parse_mode(value: object) -> str | None:
    """The mode as normalised octal digits ("0644" -> "644"); None when it is not one."""
    if not isinstance(value, str):
        return None
    digits = value[2:] if value.startswith("0o") else value
    if not digits or len(digits) > 5 or any(c not in "01234567" for c in digits):
        return None
    return "%o" % int(digits, 8)


def _account_facts(args: dict) -> dict:
    """Whether the asked-for owner and group exist here (a number always does)."""
    out = {}
    for key, lookup in (("owner", pwd.getpwnam), ("group", grp.getgrnam)):
        name = args.get(key)
        if isinstance(name, str) and name and not name.isdigit():
            try:
                lookup(name)
                out[key + "_known"] = True
            except KeyError:
                out[key + "_known"] = False
    return out


def _common_problem(module: str, args: dict, path_key: str) -> str | None:
    path = args.get(path_key)
    if not isinstance(path, str) or not os.path.isabs(path):
        return "%s: `%s` must be an absolute path (got %r)" % (module, path_key, path)
    if "mode" in args and args["mode"] is not None and parse_mode(args["mode"]) is None:
        return (
            "%s: `mode` must be a quoted octal string such as '0644' (got %r; unquoted, "
            "YAML reads 0644 as the number 420)" % (module, args["mode"])
        )
    for key in ("owner", "group"):
        if args.get(key) is not None and (not isinstance(args[key], str) or not args[key]):
            return "%s: `%s` must be a name" % (module, key)
    return None


def _attr_diff(args: dict, have: dict, facts: dict, new_mode: str | None) -> dict | str:
    """{field: [before, after]} for mode/owner/group the task asks for and the path lacks;
    a string when an asked-for account does not exist. `new_mode` applies to a path that
    does not exist yet."""
    diff = {}
    want_mode = parse_mode(args.get("mode")) if args.get("mode") is not None else None
    if have.get("type") is None:
        want_mode = want_mode or new_mode
    if want_mode is not None and have.get("mode") != want_mode:
        diff["mode"] = [have.get("mode"), want_mode]
    for key in ("owner", "group"):
        want = args.get(key)
        if want is None:
            continue
        if facts.get(key + "_known") is False:
            return "no %s %s on this host" % ("user" if key == "owner" else "group", want)
        if have.get(key) != want:
            diff[key] = [have.get(key), want]
    return diff


def _set_attrs(path: str, diff: dict) -> None:
    if "mode" in diff:
        os.chmod(path, int(diff["mode"][1], 8))
    if "owner" in diff or "group" in diff:
        uid = gid = -1
        if "owner" in diff:
            owner = diff["owner"][1]
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        if "group" in diff:
            group = diff["group"][1]
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        os.chown(path, uid, gid)


def _keep_owner(path: str, old: dict, diff: dict) -> None:
    """A rewrite is a new inode owned by the agent's user: give it back to the old file's
    owner unless the task names one. Best effort: only root may give a file away."""
    now = path_state(path)
    keep = {k: [None, old[k]] for k in ("owner", "group") if k not in diff and old[k] != now[k]}
    with contextlib.suppress(OSError):
        _set_attrs(path, keep)


PAST = {
    "create": "created",
    "write": "wrote",
    "set": "changed",
    "remove": "removed",
    "link": "linked",
    "point": "pointed",
    "replace": "replaced",
}


def _done(msg: str) -> str:
    """The decision's message, said as done ("create x" -> "created x")."""
    verb, _, rest = msg.partition(" ")
    return "%s %s" % (PAST.get(verb, verb), rest)


def _split(diff: dict) -> tuple[dict, dict]:
    return {k: v[0] for k, v in diff.items()}, {k: v[1] for k, v in diff.items()}


@register
class Copy(Module):
    """A file with exactly this content (`b64`), mode and owner; written only when one
    differs. The controller resolves `content:` / `src:` to the bytes."""

    name = "copy"

    def label(self, args: dict) -> str:
        return "copy %s" % args.get("dest", "")

    def problem(self, args: dict) -> str | None:
        problem = _common_problem("copy", args, "dest")
        if problem:
            return problem
        if not isinstance(args.get("b64"), str):
            return "copy: `b64` (the content in base64) is missing"
        try:
            base64.b64decode(args["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return "copy: `b64` must be the content in base64"
        return None

    def facts(self, args: dict) -> dict:
        if self.problem(args):
            return {}
        parent = os.path.dirname(args["dest"])
        out = {
            "dest": path_state(args["dest"], digest=True),
            "parent_exists": os.path.isdir(parent),
        }
        out.update(_account_facts(args))
        return out

    def decide(self, args: dict, facts: dict) -> Decision:
        problem = self.problem(args)
        if problem:
            return Decision.fail(problem)
        dest, have = args["dest"], facts["dest"]
        if have.get("error"):
            return Decision.fail("cannot look at %s: %s" % (dest, have["error"]))
        if have["type"] in ("directory", "other"):
            return Decision.fail("%s is a %s; `dest` names the file itself" % (dest, have["type"]))
        if have["type"] is None and not facts["parent_exists"] and not args.get("makedirs"):
            return Decision.fail(
                "directory %s does not exist; create it first or set makedirs: true"
                % os.path.dirname(dest)
            )
        want = hashlib.sha256(base64.b64decode(args.get("b64", ""))).hexdigest()
        if have["type"] != "file":
            have = {"type": None}  # a link is replaced by the file: nothing of it counts
        diff = _attr_diff(args, have, facts, NEW_FILE_MODE)
        if isinstance(diff, str):
            return Decision.fail(diff)
        content = have.get("sha256") != want
        if content:
            diff["sha256"] = [(have.get("sha256") or "")[:12] or None, want[:12]]
        if not diff:
            return Decision.ok(
                "%s is up to date (sha256 %s, mode %s)" % (dest, want[:12], have["mode"])
            )
        before, after = _split(diff)
        if content:
            msg = "write %s" % dest if have["type"] else "create %s" % dest
        else:
            msg = "set %s of %s" % (" and ".join(sorted(diff)), dest)
        return Decision.change(msg, actions=sorted(diff), before=before, after=after)

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        dest, task = args["dest"], self.label(args)
        diff = {k: [decision.before[k], decision.after[k]] for k in decision.actions}
        try:
            if "sha256" in diff:
                old = path_state(dest)
                mode = (diff.get("mode") or [None, old.get("mode") or NEW_FILE_MODE])[1]
                write_atomic(dest, base64.b64decode(args.get("b64", "")), int(mode, 8))
                diff.pop("mode", None)
                if old["type"] == "file":
                    _keep_owner(dest, old, diff)
            _set_attrs(dest, diff)
        except (OSError, KeyError) as exc:
            return Result(task, "failed", "cannot write %s: %s" % (dest, exc))
        return Result(task, "changed", _done(decision.msg), decision.before, decision.after)


@register
class File(Module):
    """A path in the state the task names: `file` (exists; never created), `directory`
    (created with its parents), `absent` (removed, a directory with its content), `touch`
    (created empty when missing; an existing file is left alone), `link` (a symlink to
    `src`; a regular file in the way is replaced only with `force: true`)."""

    name = "file"

    def label(self, args: dict) -> str:
        return "file %s" % args.get("path", "")

    def problem(self, args: dict) -> str | None:
        problem = _common_problem("file", args, "path")
        if problem:
            return problem
        state = args.get("state", "file")
        if state not in STATES:
            return "file: `state` must be one of %s (got %r)" % (", ".join(STATES), state)
        if state == "link" and (not isinstance(args.get("src"), str) or not args["src"]):
            return "file: state link needs `src`, the path the link points to"
        return None

    def facts(self, args: dict) -> dict:
        if self.problem(args):
            return {}
        # Ansible's follow: a link to a directory is that directory for state directory;
        # only link and absent look at the link itself.
        follow = args.get("state", "file") not in ("link", "absent")
        out = {
            "path": path_state(args["path"], follow=follow),
            "parent_exists": os.path.isdir(os.path.dirname(args["path"])),
        }
        out.update(_account_facts(args))
        return out

    def decide(self, args: dict, facts: dict) -> Decision:
        problem = self.problem(args)
        if problem:
            return Decision.fail(problem)
        path, state, have = args["path"], args.get("state", "file"), facts["path"]
        kind = have["type"]
        if have.get("error"):
            return Decision.fail("cannot look at %s: %s" % (path, have["error"]))
        if state == "absent":
            if kind is None:
                return Decision.ok("%s does not exist" % path)
            return Decision.change(
                "remove %s %s" % (kind, path), actions=["remove"], before=kind, after="absent"
            )
        if state == "link":
            return self._link(args, facts)
        if kind is None:
            if state == "file":
                return Decision.fail(
                    "%s does not exist; state file never creates (use touch or copy)" % path
                )
            if state == "touch" and not facts["parent_exists"]:
                return Decision.fail("directory %s does not exist" % os.path.dirname(path))
        want_kind = "directory" if state == "directory" else "file"
        if kind is not None and kind != want_kind and not (state == "file" and kind == "other"):
            return Decision.fail("%s is a %s, not a %s" % (path, kind, want_kind))
        diff = _attr_diff(args, have, facts, None)
        if isinstance(diff, str):
            return Decision.fail(diff)
        before, after = _split(diff)
        if kind is None:
            action = "mkdir" if state == "directory" else "touch"
            what = "directory" if state == "directory" else "file"
            return Decision.change(
                "create %s %s" % (what, path),
                actions=[action, *sorted(diff)],
                before=None,
                after=after,
            )
        if not diff:
            return Decision.ok("%s is a %s (mode %s)" % (path, kind, have["mode"]))
        return Decision.change(
            "set %s of %s" % (" and ".join(sorted(diff)), path),
            actions=sorted(diff),
            before=before,
            after=after,
        )

    def _link(self, args: dict, facts: dict) -> Decision:
        path, src, have = args["path"], args["src"], facts["path"]
        if have["type"] == "link":
            if have["target"] == src:
                return Decision.ok("%s -> %s" % (path, src))
            return Decision.change(
                "point %s at %s" % (path, src),
                actions=["link"],
                before=have["target"],
                after=src,
            )
        if have["type"] is None:
            if not facts["parent_exists"]:
                return Decision.fail("directory %s does not exist" % os.path.dirname(path))
            return Decision.change("link %s -> %s" % (path, src), actions=["link"], after=src)
        if have["type"] == "directory":
            return Decision.fail("%s is a directory; a link cannot replace it" % path)
        if not args.get("force"):
            return Decision.fail(
                "%s is a %s; set force: true to replace it with a link" % (path, have["type"])
            )
        return Decision.change(
            "replace %s %s with a link to %s" % (have["type"], path, src),
            actions=["link"],
            before=have["type"],
            after=src,
        )

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        path, task = args["path"], self.label(args)
        actions = decision.actions
        after = decision.after if isinstance(decision.after, dict) else {}
        try:
            if "remove" in actions:
                if os.path.isdir(path) and not os.path.islink(path):
                    import shutil  # imported where used: every agent start pays for an import

                    shutil.rmtree(path)
                else:
                    os.remove(path)
            elif "link" in actions:
                # A link made beside and renamed over: the path is never missing in between.
                tmp = "%s.%d.tmp-link" % (path, os.getpid())
                os.symlink(args["src"], tmp)
                os.replace(tmp, path)
            elif "mkdir" in actions:
                os.makedirs(path)
            elif "touch" in actions:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            attrs = {k: [None, after[k]] for k in ("mode", "owner", "group") if k in after}
            if attrs and "remove" not in actions and "link" not in actions:
                _set_attrs(path, attrs)
        except (OSError, KeyError) as exc:
            return Result(task, "failed", "cannot %s: %s" % (decision.msg, exc))
        return Result(task, "changed", _done(decision.msg), decision.before, decision.after)
