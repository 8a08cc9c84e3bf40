"""Prompt and answer token ids, and the log-prob of a continuation after a prompt (shared by
edits, locate and verify)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InputError
from .models.handle import pad_rows


def prompt_ids(handle, prompt: str, chat: bool) -> list[int]:
    """Token ids of a prompt (rendered in the chat template when `chat` and the model has one)."""
    return handle.encode([prompt], chat=chat)["input_ids"][0].tolist()


def answer_ids(handle, answer: str, chat: bool) -> list[int]:
    """Token ids of an answer as it continues its prompt (a leading space outside chat)."""
    text = answer if chat and handle.chat_template else " " + answer
    return handle.tokenizer.encode(text, add_special_tokens=False)


@torch.no_grad()
def continuation_logprobs(handle, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
                          batch_size: int = 16, writes: dict | None = None) -> list[float]:
    """Mean log-prob per token of each continuation after its prompt (token id lists).

    `writes` ({(layer, point): fn}) runs the forward with those activation rewrites (torch backend).
    """
    if len(prompts) != len(continuations):
        raise InputError("prompts and continuations must have the same length")
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        rows = [p + c for p, c in zip(prompts[i: i + batch_size], continuations[i: i + batch_size])]
        batch = pad_rows(rows, handle.pad_id, device=handle.input_device)
        if writes:
            from .backends.base import get_backend

            logits = get_backend(handle, "torch").run(batch["input_ids"], batch["attention_mask"], writes=writes).logits
        else:
            logits = handle.logits(batch["input_ids"], batch["attention_mask"])
        out += span_logprobs(logits, prompts[i: i + batch_size], continuations[i: i + batch_size]).tolist()
    return out


def span_logprobs(logits: torch.Tensor, prompts: Sequence[list[int]],
                  continuations: Sequence[list[int]]) -> torch.Tensor:
    """Mean log-prob per token of each continuation, from logits [batch, seq, vocab] of the rows
    prompt + continuation (right-padded). Differentiable: [batch]."""
    logp = torch.log_softmax(logits.float(), -1)
    out = []
    for j, (p, c) in enumerate(zip(prompts, continuations)):
        if not c:
            raise InputError("empty continuation")
        pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=logp.device)
        out.append(logp[j, pos, torch.tensor(c, device=logp.device)].mean())
    return torch.stack(out)
