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

from repedit.models.handle import pad_rows

FORWARD_TOKENS = 32     #: a forward call costs about as much as this many more tokens (weights read per call)
CLUSTER = 2             #: rows are first grouped by this many leading tokens (a template's start)
DECODE_ROWS = 128       #: greedy decoding runs up to this many rows (several prefill batches) as one batch


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


def batch_order(rows: Sequence[Sequence[int]], batch_size: int, keep: int | Sequence[int] = 1) -> list[list[int]]:
    """Row indices in batches of at most `batch_size`, planned on `forward_cost`. Rows are sorted by their
    first `CLUSTER` tokens (rows sharing a chat template or in-context shots meet), then by length; the next
    row joins the open batch unless that costs more than a forward of its own (its tokens + `FORWARD_TOKENS`).
    `keep`: tokens of its own each row keeps out of the shared prefix (the positions whose logits are wanted;
    one int or one per row). Deterministic: a batch of the plan, planned alone, is planned the same."""
    keeps = [keep] * len(rows) if isinstance(keep, int) else list(keep)
    order = sorted(range(len(rows)), key=lambda i: (list(rows[i][:CLUSTER]), len(rows[i]), list(rows[i]), i))
    batches: list[list[int]] = []
    cost = 0
    for i in order:
        if batches and len(batches[-1]) < batch_size:
            grown = forward_cost([rows[j] for j in batches[-1] + [i]], max(keeps[j] for j in batches[-1] + [i]))
            if grown - cost <= len(rows[i]) + FORWARD_TOKENS:
                batches[-1].append(i)
                cost = grown
                continue
        batches.append([i])
        cost = forward_cost([rows[i]], keeps[i])
    return batches


def forward_cost(rows: Sequence[Sequence[int]], keep: int = 1) -> int:
    """What `prefill` of these rows costs, in tokens: every forward call `FORWARD_TOKENS` (the weights are read
    once per call), the shared prefix once, every suffix padded to the longest."""
    n = shared_prefix(rows, keep)
    return FORWARD_TOKENS * (2 if n else 1) + n + len(rows) * max(len(r) - n for r in rows)


def decode_groups(batches: list[list[int]], rows: int = DECODE_ROWS) -> list[list[list[int]]]:
    """Consecutive prefill batches gathered into groups of at most `rows` rows (a whole batch never splits)
    that `greedy_batches` decodes as one batch."""
    groups: list[list[list[int]]] = []
    for b in batches:
        if groups and sum(map(len, groups[-1])) + len(b) <= rows:
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


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
    whose logits are wanted); 0 when running them once in a forward of their own saves less than that
    forward costs (`FORWARD_TOKENS`)."""
    n = len(os.path.commonprefix([list(r) for r in rows]))
    n = max(0, min(n, min(len(r) for r in rows) - keep))
    return n if n * (len(rows) - 1) > FORWARD_TOKENS else 0


def _prefix_cache(handle, prefix: Sequence[int], rows: int):
    """A KV cache holding `prefix` (run once) for each of `rows` rows; empty when there is no prefix."""
    from transformers import DynamicCache

    cache = DynamicCache(config=handle.model.config)
    if prefix:
        handle.model(input_ids=torch.tensor([list(prefix)], device=handle.input_device), past_key_values=cache,
                     use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(rows)
    return cache


@torch.no_grad()
def prefill(handle, rows: Sequence[Sequence[int]], keep: int = 1) -> Prefilled:
    """One forward of the rows (shared prefix once, then the suffixes against its cache)."""

    model, dev = handle.model, handle.input_device
    n = shared_prefix(rows, keep)
    cache = _prefix_cache(handle, rows[0][:n], len(rows))
    batch = pad_rows([list(r[n:]) for r in rows], handle.pad_id, side="left", device=dev)
    own = batch["attention_mask"]
    pos = n + (own.cumsum(-1) - 1).clamp(min=0)                             # [batch, suffix]
    mask = torch.cat([own.new_ones(len(rows), n), own], 1)
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos, past_key_values=cache,
                   use_cache=True, logits_to_keep=keep).logits
    return Prefilled(logits, cache, mask, pos[:, -1])


@torch.no_grad()
def prefill_answers(handle, prompts: Sequence[Sequence[int]],
                    answers: Sequence[Sequence[int]]) -> tuple[list[float], Prefilled | None]:
    """One forward of each prompt followed by its answer: each answer's mean log-prob per token, and the
    prompts as `prefill` leaves them (the cache cut back before the answers; None when the cache holds layers
    that cannot be cut, e.g. sliding windows). Layout [shared prefix | padding | prompt suffix | answer |
    padding]: every prompt ends in the same column, so cutting the last max(len(answer)) columns leaves
    exactly the prompts."""
    from transformers.cache_utils import DynamicLayer

    if any(not a for a in answers):
        from repedit.errors import InputError

        raise InputError("empty answer")
    model, dev, width = handle.model, handle.input_device, max(len(a) for a in answers)
    n = shared_prefix([list(p) + list(a) for p, a in zip(prompts, answers)], width + 1)
    cache = _prefix_cache(handle, prompts[0][:n], len(prompts))
    lead = max(len(p) - n for p in prompts)
    ids = [[handle.pad_id] * (lead - len(p) + n) + list(p[n:]) + list(a) + [handle.pad_id] * (width - len(a))
           for p, a in zip(prompts, answers)]
    own = torch.tensor([[0] * (lead - len(p) + n) + [1] * (len(p) - n + len(a)) + [0] * (width - len(a))
                        for p, a in zip(prompts, answers)], device=dev)
    pos = n + (own.cumsum(-1) - 1).clamp(min=0)                                # [rows, lead + width]
    mask = torch.cat([own.new_ones(len(prompts), n), own], 1)
    logits = model(input_ids=torch.tensor(ids, device=dev), attention_mask=mask, position_ids=pos,
                   past_key_values=cache, use_cache=True, logits_to_keep=width + 1).logits   # [rows, width+1, vocab]
    logp = torch.log_softmax(logits.float(), -1)
    scores = [float(logp[j, torch.arange(len(a), device=logp.device), torch.tensor(list(a), device=logp.device)]
                    .mean()) for j, a in enumerate(answers)]
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return scores, None
    cache.crop(-width)
    return scores, Prefilled(logits[:, :1].clone(), cache, mask[:, :-width], pos[:, lead - 1])  # frees the rest


def end_ids(handle) -> set[int]:
    """Token ids that end a generation (the generation config's, else the tokenizer's EOS)."""
    eos = getattr(getattr(handle.model, "generation_config", None), "eos_token_id", None)
    eos = handle.tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def _merged(states: list[Prefilled]) -> Prefilled | None:
    """Several prefilled batches as one: each cache and mask left-padded (masked) to the longest, rows
    stacked. None when a cache holds anything but plain growing key/value layers (sliding windows)."""
    from transformers.cache_utils import DynamicLayer

    if len(states) == 1:
        return states[0]
    if any(type(layer) is not DynamicLayer for st in states for layer in st.cache.layers):
        return None
    width = max(st.mask.shape[1] for st in states)

    def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(t.shape)
        shape[dim] = width - t.shape[dim]
        return torch.cat([t.new_zeros(shape), t], dim)

    cache = states[0].cache
    for n, layer in enumerate(cache.layers):
        parts = [st.cache.layers[n] for st in states]
        layer.keys = torch.cat([left_pad(p.keys, 2) for p in parts])            # [rows, heads, width, head_dim]
        layer.values = torch.cat([left_pad(p.values, 2) for p in parts])
    return Prefilled(torch.cat([st.logits for st in states]), cache,
                     torch.cat([left_pad(st.mask, 1) for st in states]), torch.cat([st.last for st in states]))


@torch.no_grad()
def greedy_batches(handle, batches: Sequence[Sequence[Sequence[int]]], max_new_tokens: int,
                   done: Callable[[int, list[int]], bool] | None = None,
                   answers: Sequence[Sequence[Sequence[int]]] | None = None) -> tuple[list[list[int]], list[float]]:
    """`greedy_rows` of several batches of rows (each prefilled on its own: its shared prefix once), decoded
    together as one batch: the new tokens of every row, batches concatenated (`done` sees that flat row
    index). With `answers` (token ids per row, per batch) each batch's prefill also scores them
    (`prefill_answers`): their mean log-prob per token, flat; [] without. `max_new_tokens=0` only scores."""
    states, scores = [], []
    for k, rows in enumerate(batches):
        if answers is None:
            states.append(prefill(handle, rows, keep=1) if max_new_tokens else None)
            continue
        vals, state = prefill_answers(handle, rows, answers[k])
        scores += vals
        if max_new_tokens:                               # (a cache that cannot be cut: the prompts again)
            states.append(state if state is not None else prefill(handle, rows, keep=1))
    if not max_new_tokens:
        return [[] for rows in batches for _ in rows], scores
    merged = _merged(states)
    if merged is None:                                   # caches that cannot be stacked: decode batch by batch
        out, start = [], 0
        for rows, st in zip(batches, states):
            out += _decode(handle, st, max_new_tokens, None if done is None else
                           (lambda k, new, start=start: done(start + k, new)))
            start += len(rows)
        return out, scores
    return _decode(handle, merged, max_new_tokens, done), scores


@torch.no_grad()
def greedy_rows(handle, rows: Sequence[Sequence[int]], max_new_tokens: int,
                done: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy new tokens of each row (KV cache); a row leaves the batch and the cache when it emits an end
    token or `done(row, its new tokens)` says so."""
    return _decode(handle, prefill(handle, rows, keep=1), max_new_tokens, done)


def _decode(handle, state: Prefilled, max_new_tokens: int,
            done: Callable[[int, list[int]], bool] | None) -> list[list[int]]:
    logits, cache, mask, last = state.logits, state.cache, state.mask, state.last
    ends = end_ids(handle)
    new: list[list[int]] = [[] for _ in range(len(mask))]
    live = list(range(len(mask)))
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
