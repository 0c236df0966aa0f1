"""Modules a user's role uses, as Ansible names them: `command`, `shell`, `copy`,
`template`, `file`, `sysctl`, `cpu_governor`, `wait_for`. The host side
(`toolkit/host/`) reads, decides and acts; here the arguments are checked and files the
host needs (a `copy: src:`, a rendered template) are read on the control machine."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from toolkit.host.protocol import Op, Result
from toolkit.names import check_env_name, check_sysctl
from toolkit.playbook.load import Task, render_text
from toolkit.tasks.base import ControllerModule, HostCtx, RunCtx, TaskError, register, require


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _role_file(task: Task, kind: str, name: str) -> Path:
    path = (task.folder / kind / name).resolve()
    if not path.is_relative_to(task.folder.resolve()) or not path.is_file():
        raise TaskError(f"{task.where}: {kind}/{name} is not a file in role {task.role}")
    return path


def _mode(task: Task, args: dict[str, Any], default: str) -> str:
    mode = str(args.get("mode", default))
    if not mode.isdigit() or not set(mode) <= set("01234567") or len(mode) > 4:
        raise TaskError(f'{task.where}: mode {mode!r} must be octal digits, like "0644"')
    return mode


@register
class Command(ControllerModule):
    name = "command"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        if isinstance(args, str):
            args = {"cmd": args}
        if not args.get("cmd") and not args.get("argv"):
            raise TaskError(f"{task.where}: {self.name} needs `cmd` (or `argv`)")
        for key in args.get("env") or {}:
            try:
                check_env_name(str(key))
            except ValueError as exc:
                raise TaskError(f"{task.where}: env: {exc}") from None
        known = {"cmd", "argv", "creates", "removes", "chdir", "env", "timeout_s"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise TaskError(f"{task.where}: unknown argument(s) {unknown}; known: {sorted(known)}")
        env = {str(k): str(v) for k, v in (args.get("env") or {}).items()}
        return [Op(self.name, {**args, "env": env})]


@register
class Shell(Command):
    name = "shell"


def copy_op(task: Task, args: dict[str, Any], data: bytes) -> Op:
    """The host's `copy` of `data` to the task's `dest` (`copy` and `template` both)."""
    out = {"dest": str(args["dest"]), "b64": _b64(data), "mode": _mode(task, args, "0644")}
    for key in ("owner", "group", "makedirs"):
        if key in args:
            out[key] = args[key]
    return Op("copy", out)


def _previous_tuning(run: RunCtx, host: HostCtx) -> dict[str, dict[str, str]]:
    """Where this host's values from before `up` changed them are kept for `down`."""
    return run.record.tuning.setdefault(host.name, {"governor": {}, "sysctl": {}})


@register
class Copy(ControllerModule):
    name = "copy"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        require(args, task.where, "dest")
        if ("content" in args) == ("src" in args):
            raise TaskError(f"{task.where}: copy needs exactly one of `content` or `src`")
        if "src" in args:
            data = _role_file(task, "files", str(args["src"])).read_bytes()
        else:
            data = str(args["content"]).encode()
        return [copy_op(task, args, data)]


@register
class Template(ControllerModule):
    """Rendered here with the task's values (StrictUndefined: a missing value is an error),
    then copied like `copy`."""

    name = "template"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        require(args, task.where, "src", "dest")
        source = _role_file(task, "templates", str(args["src"])).read_text()
        text = render_text(source, host.vars, f"{task.where}: templates/{args['src']}")
        return [copy_op(task, args, text.encode())]


@register
class File(ControllerModule):
    name = "file"
    states = ("file", "directory", "absent", "touch", "link")

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        require(args, task.where, "path")
        state = str(args.get("state", "file"))
        if state not in self.states:
            raise TaskError(f"{task.where}: state {state!r} is not one of {', '.join(self.states)}")
        if state == "link":
            require(args, task.where, "src")
        out = {**args, "state": state}
        if "mode" in args:
            out["mode"] = _mode(task, args, "0644")
        return [Op(self.name, out)]


@register
class Sysctl(ControllerModule):
    """`{key, value}` for one, or `{values: {key: value, ...}}` (the profile's sysctls)."""

    name = "sysctl"

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        pairs = (
            dict(args.get("values") or {})
            if "values" in args
            else {args.get("key"): args.get("value")}
        )
        if not pairs:
            return Result(task.name, "skipped", "no sysctls to set")
        ops = []
        for key, value in pairs.items():
            try:
                check_sysctl(str(key))
            except ValueError as exc:
                raise TaskError(f"{task.where}: {exc}") from None
            if value is None:
                raise TaskError(f"{task.where}: sysctl {key} has no value")
            label = f"sysctl {key}"
            ops.append(Op(self.name, {"key": str(key), "value": str(value)}, name=label))
        return ops

    def absorb(self, host: HostCtx, results: list[Result], run: RunCtx) -> None:
        for item in results:
            if item.module == "sysctl" and item.status == "changed" and not run.check:
                key = item.task.removeprefix("sysctl ")
                previous = _previous_tuning(run, host)
                previous["sysctl"].setdefault(key, item.before)


@register
class CpuGovernor(ControllerModule):
    name = "cpu_governor"

    def ops(
        self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx
    ) -> list[Op] | Result:
        require(args, task.where, "glob")
        if not args.get("value"):
            return Result(task.name, "skipped", "no governor to set")
        return [Op(self.name, {"glob": str(args["glob"]), "value": str(args["value"])})]

    def absorb(self, host: HostCtx, results: list[Result], run: RunCtx) -> None:
        for item in results:
            # A failed write still returns what it changed before failing: restore that too.
            if item.module == self.name and item.data.get("previous") and not run.check:
                previous = _previous_tuning(run, host)
                for path, value in item.data["previous"].items():
                    previous["governor"].setdefault(path, value)


@register
class WaitFor(ControllerModule):
    name = "wait_for"

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        if not args.get("port") and not args.get("url"):
            raise TaskError(f"{task.where}: wait_for needs `port` (with `host`) or `url`")
        return [Op(self.name, dict(args))]


@register
class PathsExist(ControllerModule):
    """Fails unless the paths exist (`any: true`: one of them); `fix` says what to do."""

    name = "paths_exist"
    readonly = True

    def ops(self, task: Task, args: dict[str, Any], host: HostCtx, run: RunCtx) -> list[Op]:
        require(args, task.where, "paths")
        paths = args["paths"] if isinstance(args["paths"], list) else [args["paths"]]
        return [Op(self.name, {**args, "paths": [str(p) for p in paths]})]
