"""`command` and `shell`: run the user's own program on the host, guarded by `creates:` /
`removes:` the way Ansible guards them.

`command` runs an argv without a shell (a `cmd` string is split with shlex, so quotes group
words but `|`, `>` and `$X` mean nothing); `shell` hands `cmd` to `bash -c`. Both run in a
session of their own with a deadline: past `timeout_s` the whole process group is killed, so
a hung step cannot hold the play forever. Only the tails of stdout and stderr are kept, so a
chatty step cannot fill the agent's memory or the result line.
"""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import contextlib
import glob
import os
import shlex
import signal
import subprocess
import threading

from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

DEFAULT_TIMEOUT_S = 3600.0
TAIL_BYTES = 8192  # of each stream, in the result's data
MSG_LINES = 20  # of stderr (or stdout when stderr is empty), in a failure's message
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of the timed-out process group


def _under(args: dict, path: str) -> str:
    """Ansible reads a relative `creates:`/`removes:` path from `chdir`."""
    return os.path.join(args.get("chdir") or "", os.path.expanduser(path))


def _exists(path: str) -> bool:
    """Ansible allows a glob in `creates:`/`removes:`."""
    return bool(glob.glob(path)) if glob.has_magic(path) else os.path.lexists(path)


class _Tail:
    """Reads a stream to its end, keeping its last TAIL_BYTES bytes and its total size."""

    def __init__(self, stream) -> None:
        self.data = b""
        self.total = 0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        with contextlib.suppress(OSError, ValueError):
            for chunk in iter(lambda: stream.read(65536), b""):
                self.total += len(chunk)
                self.data = (self.data + chunk)[-TAIL_BYTES:]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL to what is left after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(KILL_GRACE_S)
            if sig == signal.SIGTERM:
                # The leader is gone; children that ignore SIGTERM may remain in its group.
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _last_lines(text: str, n: int) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])


class _Command(Module):
    """What `command` and `shell` share; they differ in how `cmd` becomes an argv."""

    def argv(self, args: dict) -> list[str] | str:
        """The argv to run, or why there is none (a message naming the argument)."""
        raise NotImplementedError

    def problem(self, args: dict) -> str | None:
        """What is wrong with the arguments, before anything reads the host."""
        argv = self.argv(args)
        if isinstance(argv, str):
            return argv
        env = args.get("env") or {}
        if not isinstance(env, dict):
            return "%s: `env` must be a mapping of NAME: value" % self.name
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key:
                return "%s: env name %r is not a valid variable name" % (self.name, key)
            if isinstance(value, (dict, list)):
                return "%s: env %s must be a string, not a %s" % (
                    self.name,
                    key,
                    type(value).__name__,
                )
        try:
            timeout = float(args.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError):
            return "%s: `timeout_s` must be a number of seconds" % self.name
        if timeout <= 0:
            return "%s: `timeout_s` must be more than 0" % self.name
        for key in ("creates", "removes", "chdir"):
            if args.get(key) is not None and not isinstance(args[key], str):
                return "%s: `%s` must be a path" % (self.name, key)
        return None

    def facts(self, args: dict) -> dict:
        if self.problem(args):
            return {}
        out: dict = {}
        if args.get("chdir"):
            out["chdir_is_dir"] = os.path.isdir(args["chdir"])
        for key in ("creates", "removes"):
            if args.get(key):
                out[key] = _exists(_under(args, args[key]))
        return out

    def decide(self, args: dict, facts: dict) -> Decision:
        problem = self.problem(args)
        if problem:
            return Decision.fail(problem)
        if args.get("chdir") and not facts.get("chdir_is_dir"):
            return Decision.fail("chdir %s is not a directory on this host" % args["chdir"])
        if args.get("creates") and facts.get("creates"):
            return Decision.ok("%s exists" % args["creates"])
        if args.get("removes") and not facts.get("removes"):
            return Decision.ok("%s does not exist" % args["removes"])
        argv = self.argv(args)
        assert not isinstance(argv, str)
        return Decision.change("run %s" % self.shown(args, argv), actions=argv)

    def shown(self, args: dict, argv: list[str], width: int = 200) -> str:
        return _clip(shlex.join(argv), width)

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        task = self.label(args)
        env = dict(os.environ)
        env.update({k: str(v) for k, v in (args.get("env") or {}).items()})
        timeout = float(args.get("timeout_s", DEFAULT_TIMEOUT_S))
        try:
            proc = subprocess.Popen(
                decision.actions,
                cwd=args.get("chdir") or None,
                env=env,
                stdin=subprocess.DEVNULL,  # the agent's stdin carries its requests
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills all of it
                close_fds=True,
            )
        except OSError as exc:
            return Result(task, "failed", "cannot run %s: %s" % (decision.actions[0], exc))
        out, err = _Tail(proc.stdout), _Tail(proc.stderr)
        timed_out = False
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
        # A child that left the group (setsid) and holds the pipes must not hold us too.
        out.join(KILL_GRACE_S)
        err.join(KILL_GRACE_S)
        data = {
            "rc": rc,
            "stdout": out.text(),
            "stderr": err.text(),
            "stdout_bytes": out.total,
            "stderr_bytes": err.total,
        }
        said = _last_lines(err.text(), MSG_LINES) or _last_lines(out.text(), MSG_LINES)
        if timed_out:
            msg = "killed after timeout_s %g: %s" % (
                timeout,
                self.shown(args, decision.actions, 80),
            )
            return Result(task, "failed", msg + (": " + said if said else ""), data=data)
        if rc != 0:
            msg = "exit status %d from %s" % (rc, self.shown(args, decision.actions, 80))
            return Result(task, "failed", msg + (": " + said if said else ""), data=data)
        return Result(task, "changed", "ran %s" % self.shown(args, decision.actions), data=data)


@register
class Command(_Command):
    """An argv run without a shell: `argv` as a list, or `cmd` split like a shell would
    split words (and nothing more)."""

    name = "command"

    def argv(self, args: dict) -> list[str] | str:
        if ("cmd" in args) == ("argv" in args):
            return "command: give one of `cmd` (a string) or `argv` (a list)"
        if "argv" in args:
            argv = args["argv"]
            if not isinstance(argv, list) or not argv:
                return "command: `argv` must be a non-empty list"
            return [str(a) for a in argv]
        if not isinstance(args["cmd"], str):
            return "command: `cmd` must be a string (or give `argv` as a list)"
        try:
            argv = shlex.split(args["cmd"])
        except ValueError as exc:
            return "command: cannot split `cmd` into words: %s" % exc
        return argv or "command: `cmd` is empty"


@register
class Shell(_Command):
    """`cmd` run by `bash -c`: pipes, redirections and variables work; values templated into
    it are the controller's to quote."""

    name = "shell"

    def argv(self, args: dict) -> list[str] | str:
        if "argv" in args:
            return "shell: takes `cmd` (a string for bash -c); use `command` for an argv"
        cmd = args.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            return "shell: `cmd` must be a non-empty string"
        return ["bash", "-c", cmd]

    def shown(self, args: dict, argv: list[str], width: int = 200) -> str:
        return _clip(" ".join(args["cmd"].split()), width)
