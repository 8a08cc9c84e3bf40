"""Tiny random-weight models of each supported architecture (real transformers classes)."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("llama", "qwen2", "gemma3_text", "gpt2", "gpt_neox")


def tiny_config(arch: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=64, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=64, **common)
    cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "gemma3_text": tf.Gemma3TextConfig}[arch]
    extra = {"head_dim": 16} if arch == "gemma3_text" else {}
    return cls(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
               intermediate_size=64, max_position_embeddings=64, **extra, **common)


def save_tiny(arch: str, out: Path, tokenizer) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)), attn_implementation="eager")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
