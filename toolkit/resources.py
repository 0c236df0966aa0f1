"""Where the shipped data lives: profiles, roles, playbooks and example inventories.

In a source checkout they sit at the repository root; in an installed wheel they are
packaged under `toolkit/_data/` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"toolkit's {name}/ directory is missing from this installation")
