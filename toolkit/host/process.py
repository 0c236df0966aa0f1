"""Process modules: start a node detached, stop a run's processes, report on them, and run
a command in the foreground with its output streamed (the benchmark)."""

from __future__ import annotations  # annotations stay strings: 3.8 never evaluates them

import contextlib
import os
import signal
import subprocess
import time

from toolkit.host import facts as host
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

# A multi-threaded engine shows as a zombie once its main thread is gone while its other
# threads, and so its sockets, may take a moment more to close (seen once in five SGLang P/D
# stops): the ports get this long before they are called busy.
PORTS_SETTLE_S = 5.0
EXEC_WAIT_S = 2.0


@register
class Start(Module):
    """Start a script detached (its own session, so SSH going away does not end it),
    recording its PID and, through a wrapper shell, its exit status."""

    name = "start"

    def label(self, args: dict) -> str:
        return "start " + args["name"]

    def facts(self, args: dict) -> dict:
        pid = host.read_pid(args["pidfile"])
        ours = pid is not None and host.leader(args["pidfile"]) and host.alive(pid)
        return {"running": pid if ours else None}

    def decide(self, args: dict, facts: dict) -> Decision:
        if facts["running"] is not None:
            return Decision.ok("already running as pid %d" % facts["running"])
        return Decision.change("start %s" % args["script"])

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        with open(args["log"], "ab") as log:
            wrapper = 'bash "$0"; echo $? > "$1"'
            proc = subprocess.Popen(
                ["bash", "-c", wrapper, args["script"], args["pidfile"] + ".rc"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=os.path.dirname(args["script"]),
                start_new_session=True,
                close_fds=True,
            )
        with open(args["pidfile"], "w") as fh:
            fh.write("%d\n" % proc.pid)
        # Until the child has exec'd the wrapper its command line is still ours, so `leader`
        # would not know it: a stop (or start) right after would miss it. Exec takes ms.
        deadline = time.monotonic() + EXEC_WAIT_S
        while host.leader(args["pidfile"]) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        return Result(
            self.label(args), "changed", "started pid %d" % proc.pid, data={"pid": proc.pid}
        )


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except (OSError, ProcessLookupError):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


@register
class Stop(Module):
    """Stop a run's processes on this host: SIGTERM, grace, SIGKILL; then verify that none
    is left and the planned ports are free.

    `pidfiles` name started processes that lead their own sessions; with `only_pidfiles`
    just those sessions are stopped (the router before the servers), else every process
    tagged with the run and host too."""

    name = "stop"

    def facts(self, args: dict) -> dict:
        leaders = [p for p in (host.leader(f) for f in args.get("pidfiles", [])) if p is not None]
        return {"leaders": leaders, "pids": self._members(args, leaders)}

    def _members(self, args: dict, leaders: list) -> list:
        if args.get("only_pidfiles"):
            found = host.session_members(set(leaders)) + [p for p in leaders if host.alive(p)]
        else:
            found = host.run_processes(args["run_id"], args["host"], leaders)
        return sorted({p for p in found if host.alive(p)})

    def decide(self, args: dict, facts: dict) -> Decision:
        if not facts["pids"]:
            return Decision.ok("nothing to stop")
        n = len(facts["pids"])
        return Decision.change(
            "stop %d process%s" % (n, "es" if n != 1 else ""), actions=facts["pids"]
        )

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        if args.get("mark"):  # tells this host's readiness wait that the stop was deliberate
            with contextlib.suppress(OSError), open(args["mark"], "w") as fh:
                fh.write("stopped\n")
        leaders = [p for p in (host.leader(f) for f in args.get("pidfiles", [])) if p is not None]
        pids = decision.actions
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + float(args.get("grace", 20))
        while time.time() < deadline and self._members(args, leaders):
            time.sleep(0.05)
        killed = self._members(args, leaders)
        for pid in killed:
            _signal_group(pid, signal.SIGKILL)
        if killed:
            time.sleep(0.3)  # SIGKILL is not synchronous; let the kernel reap before verifying
        found = "stopped %d process%s%s" % (
            len(pids),
            "es" if len(pids) != 1 else "",
            " (%d after SIGKILL)" % len(killed) if killed else "",
        )
        left = self._members(args, leaders)
        ports = args.get("ports", [])
        ports_deadline = time.time() + (PORTS_SETTLE_S if not left else 0.0)
        while True:
            listening = host.listening_ports()
            busy = [
                "%d" % p["port"]
                for p in ports
                if host.port_holders(p["port"], p["bind"], listening)
            ]
            if not busy or time.time() >= ports_deadline:
                break
            time.sleep(0.1)
        if left or busy:
            return Result(
                self.name,
                "failed",
                found
                + "; still running: %s; ports still in use: %s"
                % (left or "none", ", ".join(busy) or "none"),
            )
        return Result(self.name, "changed", found, data={"pids": pids})


@register
class Status(Module):
    """Is each process alive, since when, and what does its HTTP port answer."""

    name = "status"

    def facts(self, args: dict) -> dict:
        rows = []
        for item in args["processes"]:
            pid = host.read_pid(item["pidfile"])
            is_alive = pid is not None and host.alive(pid)
            uptime = None
            if is_alive:
                with contextlib.suppress(OSError):
                    uptime = time.time() - os.stat("/proc/%d" % pid).st_mtime
            code = host.http_status(item["url"], 2.0) if is_alive and item.get("url") else None
            rows.append(
                {
                    "name": item["name"],
                    "pid": pid,
                    "alive": is_alive,
                    "http": code or None,  # 0: open but no HTTP answer
                    "uptime": uptime,
                    "log": item["log"],
                }
            )
        return {"processes": rows}

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.ok("", data={"processes": facts["processes"]})


@register
class Run(Module):
    """Run a script in the foreground (the benchmark), its output streamed line by line and
    kept in a log; the exit status decides ok or failed."""

    name = "run"

    def label(self, args: dict) -> str:
        return "run " + args["name"]

    def decide(self, args: dict, facts: dict) -> Decision:
        return Decision.change("run %s" % args["script"])

    def apply(self, args: dict, decision: Decision, emit: Emit) -> Result:
        proc = subprocess.Popen(
            ["bash", args["script"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=os.path.dirname(args["script"]),
        )
        assert proc.stdout is not None
        with open(args["log"], "ab") as log:
            for raw in iter(proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                emit({"line": raw.decode("utf-8", "replace").rstrip("\n")})
        rc = proc.wait()
        status = "ok" if rc == 0 else "failed"
        return Result(self.label(args), status, "exit status %d" % rc, data={"rc": rc})
