"""The bench host's side of `toolkit bench`, through its agent: facts, the corpus, the stop.

`toolkit/host/bench_helper.py` (standard library only) is uploaded into the run directory
once per session and run with the bench host's Python; each call is one agent request
(write a two-line script, run it) whose output carries one `@@bench {json}` line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit import shell
from toolkit.errors import ToolkitError
from toolkit.executor.cluster import file_op
from toolkit.executor.session import Session
from toolkit.host import bench_helper
from toolkit.host.protocol import Op

HELPER_SOURCE = Path(bench_helper.__file__).read_text(encoding="utf-8")
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL: the whole stop stays well within 10 s


class BenchHost:
    """Runs the helper on one host: `base` is a folder in the run directory."""

    def __init__(self, session: Session, host: str, python: str, base: str) -> None:
        self.session, self.host, self.python, self.base = session, host, python, base
        self.helper = f"{base}/bench_helper.py"
        self._uploaded = False

    def call(self, name: str, *args: str) -> dict[str, Any]:
        """Run `bench_helper.py ARGS` and return its JSON answer."""
        files = []
        if not self._uploaded:
            files.append((self.helper, HELPER_SOURCE, "644"))
        command = shell.join([self.python, self.helper, *args])
        script = f"{self.base}/{name}.sh"
        files.append((script, f"#!/usr/bin/env bash\nexec {command}\n", "700"))
        lines: list[str] = []
        results = self.session.agent(
            [
                file_op(files),
                Op("run", {"name": name, "script": script, "log": f"{self.base}/{name}.log"}),
            ],
            on_progress=lambda progress: lines.append(progress.get("line", "")),
        )
        self._uploaded = True
        for line in reversed(lines):
            if line.startswith(bench_helper.MARK):
                return json.loads(line[len(bench_helper.MARK) :])
        failed = next((r for r in results if r.failed), None)
        said = " / ".join(line for line in lines[-3:] if line.strip())
        why = (failed.msg if failed else "") or "no answer"
        raise ToolkitError(
            f"the bench helper ({name}) failed on {self.host} with {self.python}: {why}"
            + (f": {said}" if said else "")
        )

    def facts(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.call("facts", "facts", json.dumps(spec))

    def corpus(self, path: str, conversations: int, words: int, seed: int) -> dict[str, Any]:
        return self.call("corpus", "corpus", path, str(conversations), str(words), str(seed))

    def stop(self, pidfile: str) -> dict[str, Any]:
        return self.call("stop", "stop", pidfile, str(STOP_GRACE_S))


def client_wrapper(pidfile: str, script: str) -> str:
    """Run the rendered client script in a session of its own, its pid in `pidfile`, so a
    stop can signal the client and anything it started as one process group."""
    pid, inner = shell.quote(pidfile), shell.quote(script)
    return (
        "#!/usr/bin/env bash\n"
        f"echo $$ > {pid}\n"
        f"if command -v setsid >/dev/null 2>&1; then exec setsid bash {inner}; fi\n"
        f"exec bash {inner}\n"
    )


def stop_after_interrupt(
    host: BenchHost, pidfile: str, kill: str, say: Callable[[str], None]
) -> str:
    """After Ctrl-C: stop the client on the host and say what happened. A second Ctrl-C
    stops waiting (the stop may still finish on the host, or not if the connection went);
    the answer then holds `kill`, the command that stops the client."""
    say(f"interrupted: stopping the bench client on {host.host} (Ctrl-C again to leave it running)")
    try:
        answer = host.stop(pidfile)
    except KeyboardInterrupt:
        return (
            f"stopped waiting for the bench client on {host.host} to end; if it still runs, "
            f"stop it with: {kill}  (or `toolkit down` to stop the whole run)"
        )
    if not answer.get("stopped"):
        return (
            f"could not stop the bench client on {host.host} ({answer.get('detail')}); "
            f"stop it with: {kill}"
        )
    return f"stopped the bench client on {host.host} ({answer.get('detail')})"
