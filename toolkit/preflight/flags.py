"""Does a planned argv use the engine's flags correctly, and how would we fix it?

A recipe written for an older sglang can carry flags the installed version rejects, and
argparse says so only on the host, after the cluster launch has begun; worse, it accepts
unique prefixes, so `--moe-dense-tp 1` silently means `--moe-dense-tp-size 1`.

`check_argv` gives one finding per flag of a planned argv against the `EngineOptions` read
from the engine's source (`engine_options`, re-exported here); `translate_argv` applies the
known renames in `renames.yaml` and writes abbreviations out in full, listing each change.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import YamlError
from toolkit.preflight.engine_options import (
    EngineArgument,
    EngineOptions,
    Nargs,
    extract_sglang_options,
    extract_vllm_options,
)
from toolkit.yamlio import load_yaml

__all__ = [
    "Change",
    "EngineArgument",
    "EngineOptions",
    "FlagFinding",
    "Rename",
    "Renames",
    "check_argv",
    "extract_sglang_options",
    "extract_vllm_options",
    "load_renames",
    "translate_argv",
]

Severity = Literal["ok", "warning", "error"]
Kind = Literal[
    "ok",  # accepted as written
    "deprecated",  # accepted, but the engine names a replacement (warning)
    "abbreviation",  # a unique prefix argparse expands (warning)
    "ambiguous",  # a prefix of several flags: argparse stops (error)
    "renamed",  # rejected; renames.yaml names the new flag and value mapping (error)
    "removed",  # rejected; renames.yaml names what to use instead (error)
    "unknown",  # rejected, no known rename; `suggestions` holds the closest flags (error)
    "bad_choice",  # a value outside the statically known choices (error)
    "missing_value",
    "unexpected_value",
    "positional",  # a stray word no flag consumed (error)
]
RENAMES_FILE = Path(__file__).with_name("renames.yaml")
_COMPARE = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


# ------------------------------------------------------------------ renames


@dataclass(frozen=True)
class Rename:
    """A flag the engine no longer accepts, and what replaces it (one renames.yaml entry)."""

    engine: str
    flag: str
    kind: Literal["renamed", "removed"]
    replacement: tuple[str, ...]  # renamed: (new flag,); removed: (flag, value...) to use
    values: tuple[tuple[str, str], ...] = ()  # old value → new value
    takes_value: bool = False
    versions: str = ""
    source: str = ""
    note: str = ""

    @property
    def target(self) -> str:
        return self.replacement[0]

    def map_value(self, value: str) -> str | None:
        return dict(self.values).get(value) if self.values else value


@dataclass(frozen=True)
class Renames:
    """All known renames, for every engine (see `load_renames`)."""

    entries: tuple[Rename, ...] = ()

    def find(self, options: EngineOptions, flag: str) -> Rename | None:
        """The entry for `flag` that applies to this engine version and whose target exists."""
        for entry in self.entries:
            same = (entry.engine, entry.flag) == (options.engine, flag)
            target_exists = options.lookup(entry.target) is not None
            if same and target_exists and _version_in(options.version, entry.versions):
                return entry
        return None


def load_renames(path: Path = RENAMES_FILE) -> Renames:
    """Read renames.yaml; a malformed entry is reported with its file and line."""
    located = load_yaml(path)
    entries = []
    for engine, items in (located.data or {}).items():
        for i, item in enumerate(items or []):
            try:
                entries.append(_rename(engine, item))
            except (KeyError, TypeError, ValueError) as exc:
                raise YamlError(f"{located.where((engine, i))}: bad rename entry: {exc}") from None
    return Renames(tuple(entries))


def _rename(engine: str, item: dict) -> Rename:
    kind = item["kind"]
    if kind not in ("renamed", "removed"):
        raise ValueError(f"kind must be renamed or removed, not {kind!r}")
    replacement = (item["to"],) if kind == "renamed" else tuple(str(v) for v in item["use"])
    values = tuple((str(k), str(v)) for k, v in (item.get("values") or {}).items())
    return Rename(
        engine=engine,
        flag=item["flag"],
        kind=kind,
        replacement=replacement,
        values=values,
        takes_value=bool(item.get("takes_value")),
        versions=str(item.get("versions", "")),
        source=" ".join(str(item.get("source", "")).split()),
        note=" ".join(str(item.get("note", "")).split()),
    )


def _version_key(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def _version_in(version: str | None, spec: str) -> bool:
    """Whether `version` satisfies e.g. ">=0.5.23,<0.6"; an unknown version always does."""
    if not version or not spec.strip():
        return True
    have = _version_key(version)
    for clause in spec.split(","):
        op, bound = re.match(r"\s*(>=|<=|==|>|<)?\s*(.+)", clause).groups()
        if not _COMPARE[op or "=="](have, _version_key(bound)):
            return False
    return True


# ------------------------------------------------------------------ checking an argv


@dataclass(frozen=True)
class FlagFinding:
    """What the preflight says about one flag of a planned argv."""

    index: int  # position of the flag in the argv
    flag: str  # as written, without `=value`
    kind: Kind
    severity: Severity
    message: str
    canonical: str | None = None
    replacement: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Change:
    """One rewrite `translate_argv` made, for `toolkit plan` and the run record."""

    index: int
    before: tuple[str, ...]
    after: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        after = " ".join(self.after) or "(dropped)"
        return f"{' '.join(self.before)} → {after}: {self.reason}"


@dataclass(frozen=True)
class _Use:
    """One flag in an argv: argv[start:end] is the flag and the values it consumed."""

    start: int
    end: int
    written: str
    inline: str | None
    values: tuple[str, ...]
    kind: Kind
    arg: EngineArgument | None = None
    rename: Rename | None = None
    matches: tuple[str, ...] = ()


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def _resolve(written: str, options: EngineOptions, renames: Renames) -> dict[str, Any]:
    """How argparse (plus renames.yaml) reads one flag: kind, argument, rename, matches."""
    name = written
    if options.dash_underscores and name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    arg = options.lookup(name)
    if arg is not None:
        return {"kind": "deprecated" if arg.deprecated else "ok", "arg": arg}
    rename = renames.find(options, name)
    if rename is not None:  # checked before prefixes: the old meaning moved elsewhere
        return {"kind": rename.kind, "arg": options.lookup(rename.target), "rename": rename}
    matches = tuple(options.prefixed(name))
    if len(matches) == 1:
        return {"kind": "abbreviation", "arg": options.lookup(matches[0]), "matches": matches}
    return {"kind": "ambiguous" if matches else "unknown", "matches": matches}


def _scan(argv: list[str], options: EngineOptions, renames: Renames) -> tuple[list[_Use], list]:
    """Split an argv into flag uses (consuming values as argparse would) and positionals."""
    uses: list[_Use] = []
    positionals: list[int] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            positionals += range(i + 1, len(argv))
            break
        if not _is_option(token):
            positionals.append(i)
            i += 1
            continue
        written, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        how = _resolve(written, options, renames)
        end, values = _consume(argv, i, _nargs(how, options), inline if eq else None)
        uses.append(_Use(i, end, written, inline if eq else None, values, **how))
        i = end
    return uses, positionals


def _nargs(how: dict[str, Any], options: EngineOptions) -> Nargs:
    if "rename" in how:
        rename = how["rename"]
        if not rename.takes_value:
            return 0
        # A renamed flag takes its values the way its replacement does (`--cuda-graph-bs
        # 1 2 3` → `--cuda-graph-bs-decode 1 2 3`).
        target = options.lookup(rename.target)
        return target.nargs if target is not None else None
    return how["arg"].nargs if "arg" in how else "*"  # unknown flags: take what follows


def _consume(argv: list[str], i: int, nargs: Nargs, inline: str | None) -> tuple[int, tuple]:
    if inline is not None:
        return i + 1, (inline,)
    limit = {0: 0, None: 1, "?": 1}.get(nargs, nargs if isinstance(nargs, int) else len(argv))
    end = i + 1
    while end < len(argv) and end - i - 1 < limit and not _is_option(argv[end]):
        end += 1
    return end, tuple(argv[i + 1 : end])


def _present(uses: list[_Use]) -> dict[str, tuple[str, ...]]:
    """Canonical flag → values, for every flag the engine accepts (abbreviations included)."""
    ok = ("ok", "deprecated", "abbreviation")
    return {u.arg.canonical: u.values for u in uses if u.kind in ok and u.arg}


def check_argv(argv: list[str], options: EngineOptions, renames: Renames) -> list[FlagFinding]:
    """One finding per flag of `argv` (the launcher's arguments, without the program)."""
    uses, positionals = _scan(argv, options, renames)
    present = _present(uses)
    findings: list[FlagFinding] = []
    for use in uses:
        value_findings = _value_findings(use, options)
        if use.kind != "ok" or not value_findings:
            findings.append(_name_finding(use, options, present))
        findings += value_findings
    for index in positionals[options.max_positionals :]:
        message = f"{argv[index]!r} is a stray argument: no flag before it takes a value"
        findings.append(FlagFinding(index, argv[index], "positional", "error", message))
    return sorted(findings, key=lambda f: f.index)


def _name_finding(use: _Use, options: EngineOptions, present: dict) -> FlagFinding:
    canonical = use.arg.canonical if use.arg else None
    base = {"index": use.start, "flag": use.written, "kind": use.kind, "canonical": canonical}
    if use.kind == "ok":
        return FlagFinding(**base, severity="ok", message=f"{use.written}: accepted")
    if use.kind == "deprecated":
        hint = use.arg.deprecated
        hint = f"use {hint} instead" if hint.startswith("-") else hint
        message = f"{use.written} still works but is deprecated in {options.label}: {hint}"
        return FlagFinding(**base, severity="warning", message=message)
    if use.kind == "abbreviation":
        message = (
            f"{use.written} is not a flag of {options.label}; argparse reads it as an "
            f"abbreviation of {canonical}, which breaks once another flag shares the prefix"
        )
        return FlagFinding(**base, severity="warning", message=message, replacement=(canonical,))
    if use.kind == "ambiguous":
        shown = ", ".join(use.matches[:6])
        message = f"{use.written} is ambiguous in {options.label}: it could be {shown}"
        return FlagFinding(**base, severity="error", message=message, suggestions=use.matches)
    if use.rename is not None:
        return _rename_finding(use, options, present, base)
    close = difflib.get_close_matches(use.written, options.option_strings, n=3, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    message = f"{use.written} is not accepted by {options.label}{hint}"
    return FlagFinding(**base, severity="error", message=message, suggestions=tuple(close))


def _rename_finding(use: _Use, options: EngineOptions, present: dict, base: dict) -> FlagFinding:
    rename = use.rename
    target = options.lookup(rename.target).canonical
    message = f"{use.written} is not accepted by {options.label}"
    if rename.kind == "renamed":
        mapped = [rename.map_value(v) for v in use.values]
        replacement = (rename.target, *(m or v for v, m in zip(use.values, mapped, strict=True)))
        message += f": renamed to {' '.join(replacement)}"
        for value, new in zip(use.values, mapped, strict=True):
            message += f" ({value} → {new})" if new else f"; no known mapping for {value!r}"
    else:
        replacement = rename.replacement
        message += f": removed; use {' '.join(replacement)}"
    if target in present:
        already = " ".join((target, *present[target]))
        message += f"; the argv already sets {already}, so just drop {use.written}"
    elif rename.kind == "removed":
        message += f" (the argv does not set {target})"
    message += f". {rename.note}" if rename.note else ""
    return FlagFinding(
        **{**base, "canonical": target},
        severity="error",
        message=message,
        replacement=replacement,
        source=rename.source,
    )


def _value_findings(use: _Use, options: EngineOptions) -> list[FlagFinding]:
    arg = use.arg
    if arg is None or use.kind not in ("ok", "deprecated", "abbreviation"):
        return []
    name, count = arg.canonical, len(use.values)
    problem = None
    if arg.nargs == 0 and use.inline is not None:
        problem = ("unexpected_value", f"{use.written} takes no value, got '{use.inline}'")
    elif (arg.nargs in (None, "+") and count == 0) or (
        isinstance(arg.nargs, int) and count < arg.nargs
    ):
        problem = ("missing_value", f"{use.written} needs a value ({name}), none given")
    if problem:
        return [FlagFinding(use.start, use.written, problem[0], "error", problem[1], name)]
    if not arg.choices:
        return []
    allowed = ", ".join(map(str, arg.choices[:15]))
    return [
        FlagFinding(
            use.start,
            use.written,
            "bad_choice",
            "error",
            f"{name} {value!r} is not a choice in {options.label}: {allowed}",
            name,
        )
        for value in use.values
        if not _is_choice(value, arg.choices)
    ]


def _is_choice(value: str, choices: tuple[Any, ...]) -> bool:
    for choice in choices:
        if isinstance(choice, bool) or choice is None:
            continue
        try:
            if type(choice)(value) == choice:
                return True
        except (TypeError, ValueError):
            continue
    return False


# ------------------------------------------------------------------ translating an argv


def translate_argv(
    argv: list[str], options: EngineOptions, renames: Renames
) -> tuple[list[str], list[Change]]:
    """Apply known renames and write abbreviations out in full; idempotent.

    A replacement flag already present in the argv is never added twice: the old flag is
    dropped instead. Unknown, ambiguous and bad-choice flags are left for `check_argv`.
    """
    uses, _ = _scan(argv, options, renames)
    present = _present(uses)
    out: list[str] = []
    changes: list[Change] = []
    cursor = 0
    for use in uses:
        out += argv[cursor : use.start]
        cursor = use.end
        before = tuple(argv[use.start : use.end])
        after, reason = _rewrite(use, options, present)
        if after is None:
            out += before
            continue
        out += after
        changes.append(Change(use.start, before, tuple(after), reason))
    return out + argv[cursor:], changes


def _rewrite(use: _Use, options: EngineOptions, present: dict) -> tuple[list[str] | None, str]:
    if use.kind == "abbreviation":
        name = use.arg.canonical
        flag = f"{name}={use.inline}" if use.inline is not None else name
        return [flag, *use.values[use.inline is not None :]], f"abbreviation of {name}"
    rename = use.rename
    if rename is None:
        return None, ""
    target = options.lookup(rename.target).canonical
    if target in present:
        already = " ".join((target, *present[target]))
        return [], f"{use.written} is not accepted by {options.label}; {already} is already set"
    if rename.kind == "removed":
        present[target] = rename.replacement[1:]
        return list(rename.replacement), f"{use.written} was removed in {options.label}"
    values = [rename.map_value(v) or v for v in use.values]
    present[target] = tuple(values)
    if use.inline is not None:
        return [f"{rename.target}={values[0]}"], f"renamed in {options.label}"
    return [rename.target, *values], f"renamed in {options.label}"
