"""Rehearsal: rehearse a cluster plan's wiring in seconds, without weights or accelerators.

`engine.py` (with its `engine_*.py` siblings) is a stand-in for `sglang.launch_server` /
`vllm serve` that speaks their HTTP protocol with simulated timing; `tokenizer.py` and
`dataset.py` build the offline tokenizer and ShareGPT file the real benchmark client needs.

These files are uploaded to hosts that have no toolkit installed, so they import only the
standard library (and `tokenizers`), and siblings by plain module name when run as scripts.
"""

from __future__ import annotations

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
# The rehearsal engine: the entry file and the siblings it imports, uploaded into one directory.
ENGINE_ENTRY = "engine.py"
ENGINE_MODULES = (
    ENGINE_ENTRY,
    "engine_settings.py",
    "engine_core.py",
    "engine_api.py",
    "engine_http.py",
    "engine_cluster.py",
)
# What `toolkit bench` uploads to the bench host of a rehearsal, into one directory; the
# tokenizer imports the dataset module, which imports the engine's word list.
BENCH_HELPERS = ("engine_settings.py", "dataset.py", "tokenizer.py")


def engine_files() -> dict[str, str]:
    """The rehearsal engine's files, name -> source text: write them all into one directory
    of a host and run `python DIR/ENGINE_ENTRY [timing] -- <engine flags>` there."""
    return {name: (DIRECTORY / name).read_text() for name in ENGINE_MODULES}
