"""Tiny random-weight models of each supported architecture (real transformers classes), with the
1024-token tokenizer committed under tests/fixtures/tiny-tokenizer (no real model is loaded)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

ARCHS = ("llama", "qwen2", "gemma3_text", "gpt2", "gpt_neox")
TOKENIZER_DIR = Path(__file__).resolve().parent / "fixtures" / "tiny-tokenizer"


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """The committed tiny tokenizer (byte-level BPE, built by tests/fixtures/make_tiny_tokenizer.py)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def tiny_config(arch: str, vocab: int, **overrides):
    """A 32-wide, 3-layer config of `arch`; `overrides` set config fields (e.g. tie_word_embeddings)."""
    import transformers as tf

    if arch == "gpt2":
        cls, base = tf.GPT2Config, dict(n_embd=32, n_layer=3, n_head=2, n_positions=64)
    elif arch == "gpt_neox":
        cls, base = tf.GPTNeoXConfig, dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64)
    else:
        cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "gemma3_text": tf.Gemma3TextConfig}[arch]
        base = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                    intermediate_size=64, max_position_embeddings=64)
        if arch == "gemma3_text":
            base["head_dim"] = 16
    return cls(**{**base, "vocab_size": vocab, **overrides})


def save_tiny(arch: str, out: Path, tokenizer=None, **overrides) -> Path:
    """Save a seeded random `arch` model and its tokenizer (default: `tiny_tokenizer()`) to `out`; the
    config's bos/eos/pad ids are the tokenizer's."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id", None) for t in ("bos", "eos", "pad")}
    torch.manual_seed(0)
    config = tiny_config(arch, len(tokenizer), **{**ids, **overrides})
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
