"""General-text perplexity: token-weighted mean next-token NLL over documents, exponentiated."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from repedit.errors import InputError
from repedit.models.handle import pad_rows


def document_batches(handle, texts: Sequence[str], *, max_length: int = 256,
                     batch_size: int = 8) -> list[list[list[int]]]:
    """Token rows of `texts` (each cut to its first `max_length` tokens, BOS included when the tokenizer adds
    one) in batches of similar length (less padding)."""
    if isinstance(texts, str) or not texts:
        raise InputError("perplexity() takes a non-empty list of texts (e.g. repedit.suites.load_text())")
    rows = [handle.tokenizer.encode(t, add_special_tokens=True)[:max_length] for t in texts]
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    return [[rows[j] for j in order[i: i + batch_size]] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def batch_nll(handle, rows: list[list[int]], chunk: int = 256) -> tuple[float, int]:
    """(Σ next-token NLL, scored tokens) of one batch of token rows (the first token is never scored)."""
    from repedit.forward.passes import real_token_logits

    batch = pad_rows(rows, handle.pad_id, device=handle.input_device)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = real_token_logits(handle, ids, mask)                           # [real tokens, vocab]: no padding
    # the label of position t is token t+1; each row's last position scores nothing (-100). `chunk` positions at
    # a time: cross_entropy's log-softmax (and a half-precision model's float32 copy) is a chunk's size, not
    # the batch's (8 × 256 × 49k float32 is 400 MB: a measurement's peak)
    following = torch.cat([ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100), ids.new_full((len(rows), 1), -100)], 1)
    targets = following[mask.bool()].to(logits.device)                     # [real tokens]
    nll = sum(float(torch.nn.functional.cross_entropy(logits[i: i + chunk].float(), targets[i: i + chunk],
                                                      ignore_index=-100, reduction="sum"))
              for i in range(0, len(targets), chunk))
    return nll, int(mask[:, 1:].sum())


def perplexity(handle, texts: Sequence[str], *, max_length: int = 256, batch_size: int = 8,
               progress: bool = False) -> float:
    """exp(mean NLL) of `texts`, each truncated to its first `max_length` tokens (BOS included
    when the tokenizer adds one; the first token is never scored)."""
    nll, count = 0.0, 0
    batches = document_batches(handle, texts, max_length=max_length, batch_size=batch_size)
    for rows in tqdm(batches, disable=not progress, desc="perplexity"):
        n, c = batch_nll(handle, rows)
        nll, count = nll + n, count + c
    if count == 0:
        raise InputError("no scorable tokens: every text is a single token")
    return math.exp(nll / count)
