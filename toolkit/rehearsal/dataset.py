"""An offline ShareGPT-format file for rehearsal benchmarks.

`sglang.bench_serving --dataset-name random` samples prompt tokens from ShareGPT and downloads
it from Hugging Face unless `--dataset-path` names a local file. A rehearsal must not depend on
the network, so this writes a small file of synthetic conversations in the same format, made of
the rehearsal engine's words (so the tiny tokenizer encodes them at about one token per word).

    python -m toolkit.rehearsal.dataset DEST     (control machine)
    python3 dataset.py DEST                      (a host, next to engine_settings.py)

Standard library only, and nothing from toolkit: `toolkit bench` uploads it with its siblings
(`BENCH_HELPERS`) to a bench host that has no toolkit installed.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

if __package__:  # imported as toolkit.rehearsal.dataset
    from .engine_settings import WORDS
else:  # run as a script on a host: engine_settings.py was uploaded into this directory
    from engine_settings import WORDS  # type: ignore[import-not-found, no-redef]

DEFAULT_FILENAME = "rehearsal_sharegpt.json"


def synthetic_text(rng: random.Random, n_words: int) -> str:
    """`n_words` rehearsal words; lower case and no punctuation, so one token per word."""
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def conversations(n: int, seed: int = 0) -> list[dict]:
    """`n` two-turn conversations, deterministic for a given seed."""
    rng = random.Random(seed)
    return [
        {
            "id": f"rehearsal-{i}",
            "conversations": [
                {"from": "human", "value": synthetic_text(rng, rng.randint(24, 200))},
                {"from": "gpt", "value": synthetic_text(rng, rng.randint(24, 200))},
            ],
        }
        for i in range(n)
    ]


def write_sharegpt(dest: Path, n: int = 200) -> Path:
    """Writes `n` conversations to `dest` (or `dest/rehearsal_sharegpt.json` if a directory).

    bench_serving's `random` dataset takes one conversation per prompt and quietly runs fewer
    prompts when the file is shorter, so pass `n >= --num-prompts`.

    Deterministic, so rewriting is harmless; written atomically, so a concurrent reader never
    sees half a file. Returns the file's path.
    """
    path = Path(dest)
    if path.is_dir():
        path = path / DEFAULT_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(conversations(n), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m toolkit.rehearsal.dataset DEST [N]", file=sys.stderr)
        return 2
    print(write_sharegpt(Path(args[0]), int(args[1]) if len(args) == 2 else 200))
    return 0


if __name__ == "__main__":
    sys.exit(main())
