"""Finding, layering and validating profiles.

A profile name resolves to `<name>.yaml` in the user's profile directories first, then in
the shipped `profiles/`; a path to a YAML file works wherever a name does. Layers, lowest
first: the `extends:` chain (bases whose names start with `_` are not listed), the profile
itself, then `--set dotted.key=value` overrides. Defaults live in the schema.
Validation errors point at the file and line that defined the offending key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from toolkit import names
from toolkit.errors import ProfileError, YamlError
from toolkit.profile_schema import Profile
from toolkit.resources import data_dir
from toolkit.secrets import mask_env
from toolkit.yamlio import Located, YamlLimitError, load_yaml, parse_value

PROFILE_DIRS_ENV = "TOOLKIT_PROFILES_DIR"


@dataclass(frozen=True)
class ProfileSource:
    """A profile file and the chain of files it was layered from (child first)."""

    name: str
    path: Path
    chain: tuple[Located, ...]


def search_dirs(extra: Sequence[Path | str] = ()) -> list[Path]:
    """User directories (flag, then $TOOLKIT_PROFILES_DIR) before the shipped ones."""
    dirs = [Path(d) for d in extra]
    dirs += [Path(d) for d in os.environ.get(PROFILE_DIRS_ENV, "").split(os.pathsep) if d]
    dirs.append(data_dir("profiles"))
    return dirs


def available(extra: Sequence[Path | str] = ()) -> dict[str, Path]:
    """Listable profiles by name; user profiles shadow shipped ones of the same name."""
    found: dict[str, Path] = {}
    for directory in search_dirs(extra):
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else ():
            if not path.stem.startswith("_"):
                found.setdefault(path.stem, path)
    return found


def resolve(name_or_path: str, extra: Sequence[Path | str] = ()) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if candidate.is_file():
            return candidate
        raise ProfileError(f"profile file {name_or_path} does not exist")
    for directory in search_dirs(extra):
        path = directory / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    names = sorted(available(extra))
    close = get_close_matches(name_or_path, names, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ProfileError(
        f"unknown profile {name_or_path!r}{hint}. `toolkit profiles` lists all {len(names)}; "
        "a path to a YAML file works too"
    )


def _read_chain(path: Path, extra: Sequence[Path | str]) -> list[Located]:
    chain: list[Located] = []
    seen: list[str] = []
    current: Path | None = path
    while current is not None:
        key = str(current.resolve())
        if key in seen:
            raise ProfileError(f"{current}: `extends` forms a cycle: {' → '.join(seen)}")
        seen.append(key)
        doc = load_yaml(current)
        if not isinstance(doc.data, dict):
            raise ProfileError(f"{doc.where(())}: a profile is a mapping of settings")
        chain.append(doc)
        base = doc.data.get("extends")
        if base is None:
            current = None
        elif not isinstance(base, str):
            raise ProfileError(f"{doc.where(('extends',))}: extends takes one profile name")
        else:
            sibling = current.parent / f"{base}.yaml"
            current = sibling if sibling.is_file() else resolve(base, extra)
    return chain


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`roles.prefill.args.mem-fraction-static=0.7` → (["roles", ...], 0.7)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ProfileError(f"--set {item!r}: expected dotted.key=value")
    try:
        value = parse_value(raw, f"--set {key.strip()}") if raw.strip() else ""
    except YamlLimitError as exc:
        raise ProfileError(str(exc)) from None
    except YamlError:
        value = raw  # not YAML: the text itself
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    """Set one override; dotted keys that exist as-is (sysctl names) are matched whole."""
    node: Any = data
    i = 0
    while i < len(parts) - 1:
        # Prefer the longest existing key, so tuning.sysctl.vm.swappiness works.
        for j in range(len(parts), i + 1, -1):
            joined = ".".join(parts[i:j])
            if isinstance(node, dict) and joined in node and j == len(parts):
                node[joined] = value
                return
        head = parts[i]
        if i > 0 and parts[i - 1] == "sysctl":
            # sysctl names contain dots: the rest of the key is one name.
            node[".".join(parts[i:])] = value
            return
        if not isinstance(node, dict):
            raise ProfileError(f"--set {item}: {'.'.join(parts[:i])} is not a mapping")
        if node.get(head) is None:
            node[head] = {}
        node = node[head]
        i += 1
    if not isinstance(node, dict):
        raise ProfileError(f"--set {item}: {'.'.join(parts[:-1])} is not a mapping")
    node[parts[-1]] = value


def load_profile(
    name_or_path: str,
    overrides: Iterable[str] = (),
    extra_dirs: Sequence[Path | str] = (),
) -> Profile:
    """Resolve, layer and validate a profile."""
    path = resolve(name_or_path, extra_dirs)
    try:
        names.check_profile_name(path.stem)
    except ValueError as exc:
        raise ProfileError(f"{path}: {exc}; rename the file") from None
    chain = _read_chain(path, extra_dirs)
    data: dict[str, Any] = {}
    for doc in reversed(chain):
        data = deep_merge(data, doc.data)
    data.pop("extends", None)
    data["name"] = path.stem
    overrides = list(overrides)
    for item in overrides:
        parts, value = parse_override(item)
        apply_override(data, parts, value, item)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_explain(exc, path.stem, chain, overrides)) from None


def shown(profile: Profile) -> dict[str, Any]:
    """The profile as `toolkit profiles NAME` prints it: secret env values masked."""
    data = profile.to_data()
    data["env"] = mask_env(data["env"])
    for role in data["roles"].values():
        role["env"] = mask_env(role["env"])
    return data


def _explain(exc: ValidationError, name: str, chain: list[Located], overrides: list[str]) -> str:
    lines = []
    for err in exc.errors():
        # "[key]" marks an error in a mapping key (an env name); the key itself is in loc.
        loc = tuple(
            p for p in err["loc"] if not str(p).startswith("function-after") and p != "[key]"
        )
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        where = _where(loc, chain, overrides)
        if err["type"] == "extra_forbidden":
            message = f"unknown key {str(loc[-1])!r}" + _hint(loc, exc)
        else:
            message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {dotted}: {message}")
    head = f"profile {name} is invalid:" if len(lines) > 1 else f"profile {name}:"
    return head + ("\n  " + "\n  ".join(lines) if len(lines) > 1 else " " + lines[0])


def _hint(loc: tuple[Any, ...], exc: ValidationError) -> str:
    """Suggest the closest field name of the model that rejected the key."""
    model = _model_at(loc[:-1])
    fields = list(getattr(model, "model_fields", {}))
    close = get_close_matches(str(loc[-1]), fields, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; allowed: {', '.join(fields)}" if fields else ""


def _model_at(path: tuple[Any, ...]) -> Any:
    """The pydantic model found by walking field names (and dict keys) from Profile."""
    annotation: Any = Profile
    for part in path:
        model = _model_in(annotation)
        if model is not None and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        elif getattr(annotation, "__origin__", None) is dict:
            annotation = annotation.__args__[1]  # part is a mapping key
        else:
            return None
    return _model_in(annotation)


def _model_in(annotation: Any) -> Any:
    if hasattr(annotation, "model_fields"):
        return annotation
    if getattr(annotation, "__origin__", None) is dict:
        return None
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _where(loc: tuple[Any, ...], chain: list[Located], overrides: list[str]) -> str:
    dotted = ".".join(str(p) for p in loc)
    for item in overrides:
        if item.partition("=")[0].strip() == dotted:
            return f"--set {item}"
    best: tuple[int, str] | None = None
    for doc in chain:  # child first: the file that set a key wins
        depth = _depth(doc, loc)
        if depth and (best is None or depth > best[0]):
            best = (depth, doc.where(loc[:depth]))
    return best[1] if best else chain[0].path


def _depth(doc: Located, loc: tuple[Any, ...]) -> int:
    node: Any = doc.data
    depth = 0
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            depth += 1
        else:
            break
    return depth
