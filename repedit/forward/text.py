"""Prompt and answer token ids, and the log-prob of a continuation after a prompt (shared by
edits, locate and verify)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from repedit.errors import InputError
from repedit.models.handle import pad_rows


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

    Rows are batched by their tokens (`score_plan`); on Hugging Face models a batch's shared
    prompt prefix runs once and only the last max(len(continuation)) + 1 positions are unembedded
    (`generation.prefill`). `writes` ({(layer, point): fn}) runs a plain padded forward with those
    activation rewrites (torch backend)."""
    from repedit.forward.generation import keeps_tail_logits, prefill

    if len(prompts) != len(continuations):
        raise InputError("prompts and continuations must have the same length")
    if any(not c for c in continuations):
        raise InputError("empty continuation")
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    tail = not writes and keeps_tail_logits(handle)
    out = [0.0] * len(prompts)
    for idx in score_plan(prompts, continuations, batch_size):
        ps, cs = [list(prompts[j]) for j in idx], [list(continuations[j]) for j in idx]
        if tail:
            keep = max(len(c) for c in cs) + 1
            logits = prefill(handle, [rows[j] for j in idx], keep).logits        # [batch, keep, vocab]
            vals = _tail_logprobs(logits, cs)
        else:
            batch = pad_rows([rows[j] for j in idx], handle.pad_id, device=handle.input_device)
            if writes:
                from repedit.backends.base import get_backend

                logits = get_backend(handle, "torch").run(batch["input_ids"], batch["attention_mask"],
                                                          writes=writes).logits
            else:
                logits = handle.logits(batch["input_ids"], batch["attention_mask"])
            vals = span_logprobs(logits, ps, cs)
        for j, v in zip(idx, vals.tolist()):
            out[j] = v
    return out


def score_plan(prompts: Sequence[list[int]], continuations: Sequence[list[int]],
               batch_size: int) -> list[list[int]]:
    """`continuation_logprobs`' batches of row indices (`generation.batch_order`; each row keeps its
    continuation and one more position out of the shared prefix)."""
    from repedit.forward.generation import batch_order

    return batch_order([list(p) + list(c) for p, c in zip(prompts, continuations)], batch_size,
                       keep=[len(c) + 1 for c in continuations])


def _tail_logprobs(logits: torch.Tensor, continuations: list[list[int]]) -> torch.Tensor:
    """Mean continuation log-prob per row [batch] from the logits of each row's last positions
    [batch, keep, vocab] (rows end together: left-padded)."""
    logp = torch.log_softmax(logits.float(), -1)
    keep = logp.shape[1]
    return torch.stack([logp[j, torch.arange(keep - 1 - len(c), keep - 1, device=logp.device),
                             torch.tensor(c, device=logp.device)].mean() for j, c in enumerate(continuations)])


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
