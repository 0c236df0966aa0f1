"""Builds the tiny model the real-engine tests serve: a Llama-architecture checkpoint of a few
MB with random weights and a byte-level BPE tokenizer trained here, both deterministic.

Real engines need a real checkpoint (config, safetensors, tokenizer); the test machines reach
no model hub, so the model is made locally. Its answers are noise, which is fine: the tests
check wiring (launch, routing, KV transfer, teardown), not text. The tokenizer is trained on
a corpus generated from a seeded random generator, so the same files come out on every
machine (nothing depends on what else is installed there).

usage: python tiny_model.py OUT_DIR     (with a python that has torch, transformers, tokenizers)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 0
VOCAB_SIZE = 2048
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
CHAT_START, CHAT_END = "<|im_start|>", "<|im_end|>"
# A minimal chat template: bench clients and /v1/chat/completions need one to exist.
CHAT_TEMPLATE = (
    "{% for m in messages %}" + CHAT_START + "{{ m['role'] }}\n{{ m['content'] }}" + CHAT_END + "\n"
    "{% endfor %}{% if add_generation_prompt %}" + CHAT_START + "assistant\n{% endif %}"
)
WORDS = str.split(
    "the a an of to in and or is are was were be been it this that these those for on with as by "
    "at from up down out over under cluster node server engine router prefill decode cache token "
    "model request batch queue latency throughput memory port host address rank leader worker "
    "start stop ready health bench prompt answer reply time first second third one two three four "
    "five six seven eight nine ten hundred thousand data file path line value key error warning "
    "check plan run test pass fail send receive transfer copy move read write open close def class "
    "return import if else while yield None True False self print list dict set tuple int str"
)


def corpus(lines: int = 4000) -> list[str]:
    """Seeded sentences of words, numbers and code-like punctuation."""
    rng = random.Random(SEED)
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        end = rng.choice([".", "?", "!", ":", "()", " = 0", ","])
        out.append(" ".join(words).capitalize() + end)
    return out


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD, CHAT_START, CHAT_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=2048
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    # 2 layers, hidden 256, 4 heads over 2 KV heads (GQA, as real Llamas): ~2M parameters.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny model: {out} vocab={len(tokenizer)} parameters={params}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
