"""Batched forwards over token rows for measurement: rows grouped so a batch shares its prompt prefix,
the shared prefix run once into a KV cache, only the needed tail positions unembedded, and greedy
decoding that drops finished rows from the batch.

A batch's rows are laid out as [shared prefix | padding | own suffix]: the attention mask hides the
padding and positions count each row's real tokens, so every row is computed as if it were alone
(up to float rounding of the different batch shapes). Hugging Face causal LMs only
(`keeps_tail_logits`); callers fall back to a plain padded forward for other models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .models.handle import pad_rows

MIN_SHARED = 4          #: a shared prefix shorter than this is not worth a separate cached forward


def keeps_tail_logits(handle) -> bool:
    """Whether the model's forward takes `logits_to_keep`, `position_ids` and a KV cache (HF causal LMs)."""
    if handle.is_toy:
        return False
    memo = handle.extras.get("keeps_tail_logits")
    if memo is None:
        import inspect

        params = inspect.signature(handle.model.forward).parameters
        memo = handle.extras["keeps_tail_logits"] = all(
            k in params for k in ("logits_to_keep", "position_ids", "past_key_values"))
    return memo


def batch_order(rows: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of `batch_size`, rows sorted by their tokens (rows sharing a prompt prefix —
    a chat template, in-context shots — land in one batch; similar lengths follow)."""
    order = sorted(range(len(rows)), key=lambda i: (list(rows[i]), i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Prefilled:
    """A batch after its prompt forward: logits of the last `keep` positions [batch, keep, vocab], the KV
    cache, the attention mask over every cached position [batch, seq] and each row's last position [batch]."""

    logits: torch.Tensor
    cache: object
    mask: torch.Tensor
    last: torch.Tensor


def shared_prefix(rows: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Tokens every row starts with, leaving each row at least `keep` tokens of its own (the positions
    whose logits are wanted)."""
    n = len(os.path.commonprefix([list(r) for r in rows]))
    n = min(n, min(len(r) for r in rows) - keep)
    return n if n >= MIN_SHARED and len(rows) > 1 else 0


@torch.no_grad()
def prefill(handle, rows: Sequence[Sequence[int]], keep: int = 1) -> Prefilled:
    """One forward of the rows (shared prefix once, then the suffixes against its cache)."""
    from transformers import DynamicCache

    model, dev = handle.model, handle.input_device
    cache = DynamicCache(config=model.config)
    n = shared_prefix(rows, keep)
    if n:
        model(input_ids=torch.tensor([list(rows[0][:n])], device=dev), past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        cache.batch_repeat_interleave(len(rows))
    batch = pad_rows([list(r[n:]) for r in rows], handle.pad_id, side="left", device=dev)
    own = batch["attention_mask"]
    pos = n + (own.cumsum(-1) - 1).clamp(min=0)                             # [batch, suffix]
    mask = torch.cat([own.new_ones(len(rows), n), own], 1)
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos, past_key_values=cache,
                   use_cache=True, logits_to_keep=keep).logits
    return Prefilled(logits, cache, mask, pos[:, -1])


def end_ids(handle) -> set[int]:
    """Token ids that end a generation (the generation config's, else the tokenizer's EOS)."""
    eos = getattr(getattr(handle.model, "generation_config", None), "eos_token_id", None)
    eos = handle.tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


@torch.no_grad()
def greedy_rows(handle, rows: Sequence[Sequence[int]], max_new_tokens: int,
                done: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy new tokens of each row (KV cache); a row leaves the batch and the cache when it emits an end
    token or `done(row, its new tokens)` says so."""
    state = prefill(handle, rows, keep=1)
    logits, cache, mask, last = state.logits, state.cache, state.mask, state.last
    ends = end_ids(handle)
    new: list[list[int]] = [[] for _ in rows]
    live = list(range(len(rows)))
    for step in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1)                                       # [live]
        keep = []
        for j, (row, t) in enumerate(zip(live, nxt.tolist())):
            if t in ends:
                continue
            new[row].append(t)
            if done is None or not done(row, new[row]):
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            sel = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(sel)
            nxt, mask, last = nxt[sel.to(nxt.device)], mask[sel], last[sel]
            live = [live[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
        last = last + 1
        logits = handle.model(input_ids=nxt[:, None].to(handle.input_device), attention_mask=mask,
                              position_ids=last[:, None], past_key_values=cache, use_cache=True).logits
    return new
