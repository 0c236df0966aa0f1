"""A tiny offline tokenizer directory for rehearsal benchmarks.

In a rehearsal there are no weights, yet `sglang.bench_serving` needs `--tokenizer` to build
prompts and count output tokens, and a Hugging Face id would mean a download. This trains a
byte-level BPE (vocabulary 512) on synthetic text made of the rehearsal engine's words, so
prompts and generated text round-trip at about one token per word, and writes what
`AutoTokenizer.from_pretrained(DIR)` and the router's Rust loader need:

    tokenizer.json           no BOS/EOS added, so num_special_tokens_to_add() == 0
    tokenizer_config.json    PreTrainedTokenizerFast, bos/eos/pad, model_max_length, chat_template
    special_tokens_map.json
    config.json              model_type llama

    python -m toolkit.rehearsal.tokenizer DEST   (control machine)
    python3 tokenizer.py DEST                    (a host, next to dataset.py and engine_settings.py)

It needs `tokenizers` and nothing from toolkit: `toolkit bench` uploads it with its siblings
(`BENCH_HELPERS`) to a bench host that has no toolkit installed.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

if __package__:  # imported as toolkit.rehearsal.tokenizer
    from .dataset import synthetic_text
else:  # run as a script on a host: dataset.py was uploaded into this directory
    from dataset import synthetic_text  # type: ignore[import-not-found, no-redef]

FORMAT_VERSION = 1  # bump when the files change, so existing directories are rebuilt
VOCAB_SIZE = 512
MODEL_MAX_LENGTH = 131072
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def build_tiny_tokenizer(dest: Path) -> Path:
    """Builds the tokenizer directory at `dest` unless an up-to-date one is there already."""
    dest = Path(dest)
    if _is_current(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _write(staging)
        dest.mkdir(exist_ok=True)
        for name in FILES:  # config.json last: it marks the directory complete
            (staging / name).replace(dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _is_current(dest: Path) -> bool:
    try:
        config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    complete = all((dest / name).is_file() for name in FILES)
    return complete and config.get("rehearsal_tokenizer_version") == FORMAT_VERSION


def _corpus(lines: int = 2000) -> list[str]:
    rng = random.Random(0)
    return [synthetic_text(rng, rng.randint(8, 60)) for _ in range(lines)]


def _write(directory: Path) -> None:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:  # the CLI itself does not need it; only rehearsal benchmarks do
        raise RuntimeError(
            "building the rehearsal tokenizer needs the `tokenizers` package "
            "(pip install -r requirements/bench.txt)"
        ) from exc
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": MODEL_MAX_LENGTH,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    model = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": tokenizer.get_vocab_size(),
        "bos_token_id": tokenizer.token_to_id(BOS),
        "eos_token_id": tokenizer.token_to_id(EOS),
        "pad_token_id": tokenizer.token_to_id(PAD),
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "rehearsal_tokenizer_version": FORMAT_VERSION,
    }
    for name, data in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
        ("config.json", model),
    ):
        (directory / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m toolkit.rehearsal.tokenizer DEST", file=sys.stderr)
        return 2
    print(build_tiny_tokenizer(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
