"""Read a Python package's source statically: follow names through imports, fold literals.

`flags.py` uses this to learn an engine's command-line flags without importing the engine
(sglang's `server_args` pulls in torch). Only what flag declarations need is supported:
constants, list/tuple literals and `+`, `[*A, "x"]`, `list()/sorted()`, names bound at
module or class level (`Backend.ALL`), and `from x import y` inside the same package.
Anything else evaluates to `UNKNOWN`, never to a guess.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNKNOWN: Any = object()
_Index = tuple[dict[str, ast.AST], dict[str, tuple[str, str]]]


@dataclass(frozen=True)
class Ref:
    """A definition found in the tree: its AST node, module, and enclosing class."""

    node: ast.AST
    module: str
    cls: ast.ClassDef | None = None


class Tree:
    """The modules of one package, parsed lazily on first use."""

    def __init__(self, root: Path, package: str) -> None:
        self.root, self.package = root, package
        self._modules: dict[str, ast.Module | None] = {}
        self._index: dict[str, _Index] = {}

    def module(self, name: str) -> ast.Module | None:
        if name not in self._modules:
            self._modules[name] = self._parse(name)
        return self._modules[name]

    def _parse(self, name: str) -> ast.Module | None:
        head, _, rest = name.partition(".")
        if head != self.package:
            return None
        base = self.root.joinpath(*rest.split(".")) if rest else self.root
        paths = [base.with_suffix(".py"), base / "__init__.py"] if rest else [base / "__init__.py"]
        for path in paths:
            if path.is_file():
                return ast.parse(path.read_text(encoding="utf-8"), str(path))
        return None

    def names(self, module: str) -> _Index:
        """Top-level bindings (the last one wins) and `from x import y` imports."""
        if module not in self._index:
            names: dict[str, ast.AST] = {}
            imports: dict[str, tuple[str, str]] = {}
            for stmt in top_level(self.module(module)):
                if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    names.update({t.id: stmt.value for t in targets if isinstance(t, ast.Name)})
                elif isinstance(stmt, ast.ClassDef | ast.FunctionDef):
                    names[stmt.name] = stmt
                elif isinstance(stmt, ast.ImportFrom):
                    src = _absolute(module, stmt)
                    imports.update({a.asname or a.name: (src, a.name) for a in stmt.names})
            self._index[module] = (names, imports)
        return self._index[module]

    def lookup(self, module: str, name: str, depth: int = 0) -> Ref | None:
        """Where `name`, as seen from `module`'s top level, is defined."""
        names, imports = self.names(module)
        if depth > 25:
            return None
        if name in names:
            node = names[name]
            if isinstance(node, ast.Name | ast.Attribute):
                return self.deref(node, module, None, depth + 1)
            return Ref(node, module)
        if name in imports and self.module(imports[name][0]) is not None:
            return self.lookup(imports[name][0], imports[name][1], depth + 1)
        return None

    def deref(
        self, node: ast.AST, module: str, cls: ast.ClassDef | None = None, depth: int = 0
    ) -> Ref | None:
        """Follow a Name or `Class.attr` to the node that defines it (others: itself)."""
        if isinstance(node, ast.Name):
            local = class_attr(cls, node.id)
            return Ref(local, module, cls) if local else self.lookup(module, node.id, depth)
        if isinstance(node, ast.Attribute):
            base = self.deref(node.value, module, cls, depth + 1)
            if base is not None and isinstance(base.node, ast.ClassDef):
                attr = class_attr(base.node, node.attr)
                return Ref(attr, base.module, base.node) if attr else None
            return None
        return Ref(node, module, cls)

    def value(self, node: ast.AST | None, module: str, cls: ast.ClassDef | None = None) -> Any:
        """Fold a literal-ish expression to a Python value, or return UNKNOWN."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return self._sequence(node.elts, module, cls)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.value(node.left, module, cls), self.value(node.right, module, cls)
            if isinstance(left, list | tuple) and isinstance(right, list | tuple):
                return [*left, *right]
            both_str = isinstance(left, str) and isinstance(right, str)
            return left + right if both_str else UNKNOWN
        if isinstance(node, ast.Call) and dotted(node.func) in ("list", "tuple", "sorted", "set"):
            inner = self.value(node.args[0], module, cls) if len(node.args) == 1 else UNKNOWN
            return list(inner) if isinstance(inner, list) else UNKNOWN
        if isinstance(node, ast.Name | ast.Attribute):
            ref = self.deref(node, module, cls)
            if ref is not None and ref.node is not node:
                return self.value(ref.node, ref.module, ref.cls)
        return UNKNOWN

    def _sequence(self, elts: list[ast.expr], module: str, cls: ast.ClassDef | None) -> Any:
        items: list[Any] = []
        for elt in elts:
            starred = isinstance(elt, ast.Starred)
            item = self.value(elt.value if starred else elt, module, cls)
            if item is UNKNOWN or (starred and not isinstance(item, list | tuple)):
                return UNKNOWN
            if starred:
                items.extend(item)
            else:
                items.append(item)
        return items

    def kwargs(self, call: ast.AST | None, module: str) -> dict[str, tuple[ast.AST, Any]]:
        """Keyword arguments of a call (or the items of a `{...}` literal): node and value."""
        if isinstance(call, ast.Dict):
            pairs = [
                (self.value(k, module), v) for k, v in zip(call.keys, call.values, strict=True)
            ]
        else:
            pairs = [(k.arg, k.value) for k in getattr(call, "keywords", []) if k.arg]
        return {k: (node, self.value(node, module)) for k, node in pairs if isinstance(k, str)}

    def version(self) -> str | None:
        """`__version__` from `<package>/version.py` or `_version.py`."""
        for module in (f"{self.package}.version", f"{self.package}._version"):
            for name in ("__version__", "version"):
                ref = self.lookup(module, name) if self.module(module) else None
                found = self.value(ref.node, ref.module) if ref else None
                if isinstance(found, str):
                    return found
        return None


def top_level(module: ast.Module | None) -> list[ast.stmt]:
    """Statements at module level, looking inside top-level `if` and `try` blocks."""
    stmts: list[ast.stmt] = []
    for stmt in module.body if module else []:
        if isinstance(stmt, ast.If):
            stmts += top_level(ast.Module([*stmt.body, *stmt.orelse], []))
        elif isinstance(stmt, ast.Try):
            stmts += top_level(ast.Module(stmt.body, []))
        else:
            stmts.append(stmt)
    return stmts


def _absolute(module: str, stmt: ast.ImportFrom) -> str:
    if not stmt.level:
        return stmt.module or ""
    base = module.split(".")[: -stmt.level]
    return ".".join([*base, stmt.module] if stmt.module else base)


def class_attr(cls: ast.ClassDef | None, name: str) -> ast.AST | None:
    """The value assigned to `name` in a class body."""
    for stmt in cls.body if cls else []:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value else targets
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return stmt.value
    return None


def dotted(node: ast.AST | None) -> str:
    """`a.b.c` for a Name/Attribute chain, "" otherwise."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def last_name(node: ast.AST | None) -> str:
    return dotted(node).rsplit(".", 1)[-1]


def calls(scope: ast.AST, method: str) -> list[ast.Call]:
    """Calls of `x.method(...)` or `method(...)` anywhere under `scope`, in source order."""
    found = [n for n in ast.walk(scope) if isinstance(n, ast.Call) and last_name(n.func) == method]
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def package_root(source_dir: Path, package: str) -> Path:
    """Accept the package dir itself, its parent (site-packages), or a repo with python/."""
    for candidate in (source_dir, source_dir / package, source_dir / "python" / package):
        if candidate.name == package and (candidate / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError(f"{source_dir}: no {package}/ package directory found")


def as_expr(node: ast.AST) -> ast.AST:
    """A string annotation (`"Optional[int]"`) parsed into its expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return node
    return node


def type_shape(tree: Tree, node: ast.AST, module: str, depth: int = 0) -> tuple[str, Any]:
    """Classify a type as "bool", "list", "literal" (with its values) or "scalar".

    Mirrors sglang's `_unwrap_optional` (only `Union[X, None]` is unwrapped), then
    Literal, then list, then bool. A bare name bound to a type expression is followed.
    """
    node = as_expr(node)
    head, args = "", []
    if isinstance(node, ast.Subscript):
        head = last_name(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        head, args = "Union", _union_members(node)
    if head in ("Optional", "Union"):
        rest = [a for a in args if not _is_none(a)]
        ok = len(rest) == 1 and depth < 10
        return type_shape(tree, rest[0], module, depth + 1) if ok else ("scalar", None)
    if head == "Literal":
        return "literal", [tree.value(a, module) for a in args]
    if head in ("list", "List"):
        return "list", None
    if head == "Annotated" and depth < 10:
        return type_shape(tree, args[0], module, depth + 1)
    if isinstance(node, ast.Name) and node.id == "bool":
        return "bool", None
    ref = tree.deref(node, module) if isinstance(node, ast.Name) and depth < 10 else None
    if ref is not None and isinstance(ref.node, ast.Subscript | ast.BinOp):  # a type alias
        return type_shape(tree, ref.node, ref.module, depth + 1)
    return "scalar", None


def _union_members(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_members(node.left) + _union_members(node.right)
    return [node]


def _is_none(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or dotted(node) == "None"


def init_default(tree: Tree, cls_node: ast.AST, module: str, param: str) -> Any:
    """Default of `param` in a class's `__init__` (following bases); None if not found."""
    ref = tree.deref(cls_node, module)
    while ref is not None and isinstance(ref.node, ast.ClassDef):
        for fn in ref.node.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                return _param_default(tree, fn.args, param, ref.module)
        bases = [b for b in ref.node.bases if dotted(b) != "argparse.Action"]
        ref = tree.deref(bases[0], ref.module) if bases else None
    return None


def _param_default(tree: Tree, args: ast.arguments, param: str, module: str) -> Any:
    positional = args.args[len(args.args) - len(args.defaults) :]
    pairs = [
        *zip(positional, args.defaults, strict=True),
        *zip(args.kwonlyargs, args.kw_defaults, strict=True),
    ]
    for arg, default in pairs:
        if arg.arg == param and default is not None:
            return tree.value(default, module)
    return None
