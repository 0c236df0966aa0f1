"""Where a benchmark's prompts come from, decided before the client starts.

bench_serving's `random` dataset cuts its prompts out of ShareGPT text and downloads
ShareGPT from the Hugging Face hub when no `--dataset-path` is given; `sharegpt` does the
same. Air-gapped clusters (most Ascend ones, and CI here) have no hub, and the client then
fails after loading its tokenizer. vLLM's `random` needs no text (random token ids), but
its `sharegpt` needs a local file. So, per run:

- a `--dataset-path` the user gave must exist on the bench host (checked first);
- when text is needed, none was given and the hub cannot be reached (or the client cannot
  download it), toolkit writes a deterministic ShareGPT-format corpus on the bench host
  (`bench_helper.py corpus`) sized for the run: one conversation per prompt, each first turn
  as many words as the longest prompt has tokens (within `MAX_CORPUS_WORDS` in all);
- `random-ids` and vLLM's `random` need nothing.

Pure: the hub's reachability comes in as a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.bench.clients import split_flags

# Text datasets' defaults when the flag is absent: bench_serving's dataset is sharegpt,
# vLLM's random; both ask for 1000 prompts.
DEFAULT_DATASET = {"sglang": "sharegpt", "vllm": "random"}
DEFAULT_PROMPTS = 1000
SHAREGPT_WORDS = 200  # a ShareGPT-like first turn for the sharegpt dataset
# About 25 MB of JSON: longer prompts repeat their conversation's text (bench_serving tiles a
# short prompt up to the length it drew), which the summary says.
MAX_CORPUS_WORDS = 4_000_000
CORPUS_SEED = 0


@dataclass(frozen=True)
class Corpus:
    """A ShareGPT-format file to generate: `conversations` first turns of `words` words."""

    conversations: int
    words: int
    seed: int = CORPUS_SEED
    repeats: bool = False  # prompts longer than `words` tokens repeat their text

    @property
    def filename(self) -> str:
        return f"sharegpt-offline-{self.conversations}x{self.words}-seed{self.seed}.json"


@dataclass(frozen=True)
class DatasetChoice:
    """What the client will read: a given path, a corpus to build, the hub, or nothing."""

    source: str  # "path", "corpus", "hub", "none"
    note: str
    corpus: Corpus | None = None


def flag(flags: list[str], name: str) -> str | None:
    found = [values for flag, values in split_flags(flags) if flag == name]
    return found[-1][0] if found and found[-1] else None


def dataset_name(client: str, flags: list[str]) -> str:
    return flag(flags, "dataset-name") or DEFAULT_DATASET[client]


def needs_text(client: str, flags: list[str]) -> bool:
    """Does the client read ShareGPT text for this run (from a path or the hub)?"""
    name = dataset_name(client, flags)
    if client == "vllm":
        return name == "sharegpt"
    return name in ("random", "sharegpt")


def corpus_for(client: str, flags: list[str]) -> Corpus:
    """One conversation per prompt, long enough for the longest prompt the run can draw."""
    prompts = int(flag(flags, "num-prompts") or DEFAULT_PROMPTS)
    if dataset_name(client, flags) == "sharegpt":
        words = SHAREGPT_WORDS
    else:
        # bench_serving draws input lengths up to --random-input-len (vLLM's translated
        # range has the same top); a few words spare for the tokenizer's special tokens.
        words = int(flag(flags, "random-input-len") or 1024) + 8
    conversations = max(prompts, 1)
    fitted = max(1, min(words, MAX_CORPUS_WORDS // conversations))
    return Corpus(conversations, fitted, repeats=fitted < words)


def choose_dataset(
    client: str, flags: list[str], hub_reachable: bool | None, hub_detail: str = ""
) -> DatasetChoice:
    """Where this run's prompts come from (see the module docstring)."""
    name = dataset_name(client, flags)
    path = flag(flags, "dataset-path")
    if path:
        return DatasetChoice("path", f"{name} prompts from {path}")
    if not needs_text(client, flags):
        return DatasetChoice("none", f"{name} prompts need no dataset file")
    if client == "sglang" and hub_reachable:
        return DatasetChoice("hub", f"{name} prompts cut from ShareGPT (from the Hugging Face hub)")
    corpus = corpus_for(client, flags)
    why = (
        "vLLM's sharegpt dataset needs a local file"
        if client == "vllm"
        else f"the Hugging Face hub cannot be reached ({hub_detail or 'no connection'})"
    )
    note = (
        f"{name} prompts cut from an offline ShareGPT-format corpus toolkit generated on the "
        f"bench host ({corpus.conversations} conversations of {corpus.words} words): {why}"
    )
    if corpus.repeats:
        note += "; longer prompts repeat their text"
    return DatasetChoice("corpus", note, corpus)
