"""Splits seed 003 (the Ascend A3 recipe page) into its recipes, for equivalence tests.

Each recipe section starts with a `GLM-5.1 W4A8 …` heading and holds, in order, the
deployment script, (for PD) the router command, and the benchmark command, each after a
line reading `Command`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
SEED_003 = next(iter(sorted(SEEDS.glob("003_*.txt"))), None) if SEEDS.is_dir() else None

_HEADING = re.compile(r"^GLM-5\.1 W4A8 .+$", re.M)


@dataclass(frozen=True)
class Recipe:
    heading: str
    deploy: str
    router: str | None
    bench: str


def _commands(body: str) -> list[str]:
    parts = re.split(r"^Command\n", body, flags=re.M)[1:]
    blocks = []
    for part in parts:
        lines = []
        for line in part.splitlines():
            if line in ("Benchmark",) or line.startswith("We tested it"):
                break
            lines.append(line)
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


def load_recipes(path: Path | None = SEED_003) -> list[Recipe]:
    if path is None:
        return []
    text = path.read_text()
    heads = list(_HEADING.finditer(text))
    recipes = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        blocks = _commands(text[head.end() : end])
        router = blocks[1] if len(blocks) == 3 else None
        recipes.append(Recipe(head.group(0).strip(), blocks[0], router, blocks[-1]))
    return recipes
