"""Lower layers never import the executor: the preflight's judging and the renderers are
pure (facts in, findings or text out), tested without SSH, and usable from `plan`.

Why: the pure preflight modules used to live in `executor/`, so `render/` imported the
package that talks SSH. The direct imports are read from the sources (ast); the transitive
ones by importing every such module in a fresh interpreter and listing what got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import toolkit

ROOT = Path(toolkit.__file__).resolve().parent
PURE = ("preflight", "render")


def _modules() -> list[Path]:
    found = sorted(p for package in PURE for p in (ROOT / package).rglob("*.py"))
    assert found, f"no modules under {PURE}"
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_pure_module_imports_the_executor() -> None:
    bad = {
        str(path.relative_to(ROOT.parent)): name
        for path in _modules()
        for name in _imports(path)
        if name == "toolkit.executor" or name.startswith("toolkit.executor.")
    }
    assert not bad, f"pure modules import the executor: {bad}"


def test_importing_them_loads_no_executor_module() -> None:
    names = [
        ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in _modules()
    ]
    program = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('toolkit.executor')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
