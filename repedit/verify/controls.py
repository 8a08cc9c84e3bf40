"""Controls for probe results: the same architecture with random weights."""

from __future__ import annotations

import torch

from repedit.models.handle import ModelHandle


def random_init_twin(handle: ModelHandle, seed: int = 0) -> ModelHandle:
    """A new handle with `handle`'s architecture and tokenizer but freshly initialised weights.

    The global RNG state is left untouched (the init runs inside `torch.random.fork_rng`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if handle.is_toy:
            from transformer_lens import HookedTransformer

            model = HookedTransformer(handle.model.cfg)
            model.init_weights()
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_config(handle.model.config, attn_implementation="eager")
    model.eval()
    extras = {k: v for k, v in handle.extras.items() if k not in ("backends",)}
    return ModelHandle(
        id=f"{handle.id}:random-init-{seed}", model=model, tokenizer=handle.tokenizer, layout=handle.layout,
        n_layers=handle.n_layers, d_model=handle.d_model, d_mlp=handle.d_mlp, d_vocab=handle.d_vocab,
        source=f"random init (seed {seed}) of {handle.source}", is_toy=handle.is_toy,
        chat_template=handle.chat_template, extras=extras)
