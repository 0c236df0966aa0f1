"""The host package as one payload: the agent's bootstrap installs these sources as modules
(the host has no toolkit installed) and starts `serve`.

The control side sends the payload's length on a line, then the payload: a JSON list of
{loader, modules: [[module name, is package, source], ...] in import order}.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Import order: each file imports only the ones before it.
ORDER = (
    "protocol",
    "facts",
    "module",
    "files",
    "system",
    "process",
    "run_state",
    "wait",
    "commands",
    "filesystem",
    "wait_for",
    "probe",
    "reach",
    "agent",
)
# The command line stays one short line (it shows in error messages): it reads the payload
# and runs its loader, which installs the modules and starts the agent.
BOOTSTRAP = (
    "import sys, json; "
    "payload = json.loads(sys.stdin.buffer.read(int(sys.stdin.buffer.readline()))); "
    "exec(payload['loader'])"
)
LOADER = """
import types
for name, package, source in payload['modules']:
    module = types.ModuleType(name)
    module.__file__ = '<toolkit-agent>/' + name
    if package:
        module.__path__ = []
    sys.modules[name] = module
    if '.' in name:
        parent, child = name.rsplit('.', 1)
        setattr(sys.modules[parent], child, module)
    exec(compile(source, module.__file__, 'exec'), module.__dict__)
sys.modules['toolkit.host.agent'].serve()
"""


# `toolkit check`'s modules: only its own agent carries them (each costs every agent start
# its compile time, about 15 ms for these two); loading one registers its modules.
CHECK_ONLY = ("probe", "reach")


@functools.cache
def payload(check: bool = False) -> bytes:
    """The bundle; `check`: with `toolkit check`'s modules. Built when an agent first starts
    (not at import: `toolkit plan` or `profiles` start none), then reused."""
    names = [n for n in ORDER if check or n not in CHECK_ONLY]
    items: list[tuple[str, bool, str]] = [("toolkit", True, ""), ("toolkit.host", True, "")]
    items += [(f"toolkit.host.{name}", False, (HERE / f"{name}.py").read_text()) for name in names]
    data = json.dumps({"loader": LOADER, "modules": items}).encode()
    return b"%d\n" % len(data) + data
