"""The engine's flags, as installed on a host, and the plan's argv translated to them.

The flags are read by toolkit's own static extractor (`toolkit.preflight.engine_options`,
pure `ast`, no torch), run *on the host* against its installed package: its two modules
are sent on stdin with a small driver (`extractor_program`; the executor's
`check_remote.extract_remote` sends it), so nothing is installed there and the whole source
tree never crosses the network. The extractor needs Python >= 3.10, which sglang itself
requires. Results are cached locally by engine, version and the sha256 of sglang's
`server_args.py` (from the probe), so a cluster of identical hosts pays for one
extraction, once.

`translate_plan` applies `translate_argv` (known renames, abbreviations written out) to
every node with the options of its own host, and records each change in `plan.notes`, so
`toolkit plan` shows it and the run record keeps it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.plan import Plan
from toolkit.preflight import _pysource, engine_options
from toolkit.preflight.check_plan import engine_args_start
from toolkit.preflight.flags import (
    EngineArgument,
    EngineOptions,
    Renames,
    load_renames,
    translate_argv,
)

_MODULES = {
    "toolkit.preflight._pysource": Path(_pysource.__file__),
    "toolkit.preflight.engine_options": Path(engine_options.__file__),
}
_DRIVER = """
import json, sys, types
from pathlib import Path
for package in ("toolkit", "toolkit.preflight"):
    module = types.ModuleType(package)
    module.__path__ = []
    sys.modules[package] = module
for name, text in SOURCES:
    module = types.ModuleType(name)
    sys.modules[name] = module
    parent, _, leaf = name.rpartition(".")
    setattr(sys.modules[parent], leaf, module)
    exec(compile(text, name, "exec"), module.__dict__)
extractor = sys.modules["toolkit.preflight.engine_options"]
UNKNOWN = sys.modules["toolkit.preflight._pysource"].UNKNOWN
engine, source = sys.argv[1], sys.argv[2]
try:
    found = getattr(extractor, "extract_%s_options" % engine)(Path(source))
    out = {"options": {
        "engine": found.engine, "version": found.version, "source": found.source,
        "allow_abbrev": found.allow_abbrev, "dash_underscores": found.dash_underscores,
        "max_positionals": found.max_positionals,
        "arguments": [[list(a.options), "*" if a.nargs is UNKNOWN else a.nargs,
                       list(a.choices) if a.choices else None, a.deprecated, a.origin]
                      for a in found.arguments]}}
except Exception as exc:
    out = {"error": "%s: %s" % (type(exc).__name__, exc)}
sys.stdout.write(json.dumps(out, default=lambda value: None) + "\\n")
"""


def extractor_program() -> str:
    """The driver with the extractor's sources inlined (sent to `python -` on stdin)."""
    sources = [(name, path.read_text(encoding="utf-8")) for name, path in _MODULES.items()]
    return f"SOURCES = {sources!r}\n{_DRIVER}"


def options_from_json(data: dict[str, Any]) -> EngineOptions:
    arguments = tuple(
        EngineArgument(
            tuple(options),
            nargs,
            tuple(choices) if choices else None,
            deprecated,
            origin,
        )
        for options, nargs, choices, deprecated, origin in data["arguments"]
    )
    fields = {k: v for k, v in data.items() if k != "arguments"}
    return EngineOptions(arguments=arguments, **fields)


def options_to_json(options: EngineOptions) -> dict[str, Any]:
    data = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    data["arguments"] = [
        [list(a.options), a.nargs, list(a.choices) if a.choices else None, a.deprecated, a.origin]
        for a in options.arguments
    ]
    return data


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "toolkit" / "engine-options"


def cache_key(engine: str, version: str | None, sha256: str | None) -> str | None:
    """A name for the extraction of one engine build; None when it cannot be identified."""
    if not sha256 or not version:
        return None
    return f"{engine}-{version}-{sha256[:20]}"


def cached(key: str | None) -> EngineOptions | None:
    if key is None:
        return None
    path = cache_dir() / f"{key}.json"
    try:
        return options_from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str | None, options: EngineOptions) -> None:
    if key is None:
        return
    path = cache_dir() / f"{key}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(options_to_json(options)))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def local_options(engine: str) -> EngineOptions:
    """The engine installed beside toolkit (read, not imported), for `plan --translate-flags`."""
    spec = importlib.util.find_spec(engine)
    if spec is None or not spec.origin:
        raise ToolkitError(
            f"--translate-flags needs {engine}'s flags, but {engine} is not installed here; "
            f"`toolkit check --translate-flags` reads them from each host instead"
        )
    extract = getattr(engine_options, f"extract_{engine}_options")
    return extract(Path(spec.origin).parent)


def translate_plan(
    plan: Plan, options_by_host: dict[str, EngineOptions], renames: Renames | None = None
) -> tuple[Plan, dict[str, list[str]]]:
    """The plan with each node's engine arguments translated for its host's engine.

    Returns the new plan, whose `notes` list each distinct change once per role, and the
    changes per node name. Nodes of hosts without options (engine missing) keep their argv.
    """
    renames = renames or load_renames()
    start = engine_args_start(plan)
    nodes, notes = [], list(plan.notes)
    changed: dict[str, list[str]] = {}
    seen: dict[tuple[str, str, str], list[str]] = {}
    for node in plan.nodes:
        options = options_by_host.get(node.host)
        if options is None:
            nodes.append(node)
            continue
        args, changes = translate_argv(node.argv[start:], options, renames)
        nodes.append(dataclasses.replace(node, argv=node.argv[:start] + args))
        changed[node.name] = [str(change) for change in changes]
        for change in changes:
            seen.setdefault((node.role, options.label, str(change)), []).append(node.name)
    for (_, label, change), names in seen.items():
        notes.append(f"--translate-flags for {label} ({', '.join(names)}): {change}")
    return dataclasses.replace(plan, nodes=nodes, notes=notes), changed
