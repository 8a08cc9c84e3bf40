"""General-text perplexity: token-weighted mean next-token NLL over documents, exponentiated."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.handle import pad_rows


@torch.no_grad()
def perplexity(handle, texts: Sequence[str], *, max_length: int = 256, batch_size: int = 8,
               progress: bool = False) -> float:
    """exp(mean NLL) of `texts`, each truncated to its first `max_length` tokens (BOS included
    when the tokenizer adds one; the first token is never scored)."""
    if isinstance(texts, str) or not texts:
        raise InputError("perplexity() takes a non-empty list of texts (e.g. repedit.suites.load_text())")
    nll, count = 0.0, 0
    for i in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="perplexity"):
        rows = [handle.tokenizer.encode(t, add_special_tokens=True)[:max_length] for t in texts[i: i + batch_size]]
        batch = pad_rows(rows, handle.pad_id, device=handle.input_device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        logits = handle.logits(ids, mask).float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        valid = mask[:, 1:].bool()
        nll -= float(logp[valid].sum())
        count += int(valid.sum())
    if count == 0:
        raise InputError("no scorable tokens: every text is a single token")
    return math.exp(nll / count)
