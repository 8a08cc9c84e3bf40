"""Last-token residuals of every pool item, in several neutral contexts, at every depth, in one pass.

Depth 0 is the embedding output (resid_pre of layer 0); depth d ≥ 1 is resid_post of layer d−1.
For text pools a *context* is a template containing "{text}"; for token pools (toys, whose
context window holds little more than a sequence) a view is the sequence read up to a given
length, so the last-token residual is taken after each of several prefix lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from repedit.backends.base import Key, WriteFn, get_backend
from repedit.errors import InputError
from repedit.models.handle import pad_rows
from repedit.sites import Point
from repedit.suites.pools import CLASSES, Pool, item_ids

#: 24 neutral contexts; the memorised text ends each prompt, its last token is read.
CONTEXTS: tuple[str, ...] = (
    "Here is a passage: {text}",
    "The following text appeared in a document: {text}",
    "Read this: {text}",
    "Text: {text}",
    "Consider the following lines. {text}",
    "From a file on my computer:\n{text}",
    "Quoted below.\n\n{text}",
    "Excerpt: {text}",
    "I found this written somewhere: {text}",
    "Source text follows. {text}",
    "Here is what it says: {text}",
    "Passage:\n{text}",
    "Please look at this paragraph. {text}",
    "Copied verbatim: {text}",
    "A short extract: {text}",
    "Input: {text}",
    "Note: {text}",
    "This is the text we discussed. {text}",
    "The document reads as follows: {text}",
    "Sample:\n\n{text}",
    "Someone wrote: {text}",
    "Example passage - {text}",
    "Here you go: {text}",
    "Transcript: {text}",
)


def depth_key(depth: int) -> Key:
    """(layer, point) of a depth: 0 = embeddings, d = output of layer d−1."""
    return (0, Point.RESID_PRE) if depth == 0 else (depth - 1, Point.RESID_POST)


@dataclass(frozen=True)
class PoolFeatures:
    """acts [n_depths, n_keys, 3 (M, C, B), n_views, d] float32, with the depths and keys they belong to."""

    model: str
    pool: str
    keys: tuple[str, ...]
    depths: tuple[int, ...]
    acts: np.ndarray
    n_tokens: int
    seconds: float

    def __post_init__(self) -> None:
        if self.acts.shape[:2] != (len(self.depths), len(self.keys)) or self.acts.shape[2] != 3:
            raise InputError(f"acts shape {self.acts.shape} does not match depths/keys")

    @property
    def n_views(self) -> int:
        return self.acts.shape[3]

    def task(self, depth_index: int, pos: str, neg: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X [n, d], y [n] in {0,1}, groups [n]) for pos-vs-neg classes at one depth index."""
        a, b = CLASSES.index(pos), CLASSES.index(neg)
        x = self.acts[depth_index]                     # [keys, 3, views, d]
        k, v = x.shape[0], x.shape[2]
        X = np.concatenate([x[:, a], x[:, b]], axis=1).reshape(k * 2 * v, -1)
        y = np.tile(np.repeat([1, 0], v), k)
        groups = np.repeat(np.arange(k), 2 * v)
        return X, y, groups


def pool_rows(handle, pool: Pool, contexts: Sequence[str] | None, max_tokens: int) -> tuple[list[list[int]], int]:
    """Token rows ordered (key, class M/C/B, view) and the number of views."""
    rows = []
    if pool.tokens:
        n_ctx = len(pool.keys[0].memorised)
        views = list(contexts) if contexts is not None else list(range(n_ctx - 23, n_ctx + 1))
        if any(not isinstance(t, int) or not 1 <= t <= n_ctx for t in views):
            raise InputError(f"token pools take prefix lengths in 1..{n_ctx} as views")
        for k in pool.keys:
            for cls in CLASSES:
                seq = list(k.item(cls))
                rows += [seq[:t] for t in views]
        return rows, len(views)
    views = list(contexts) if contexts is not None else list(CONTEXTS)
    if not views or any(not isinstance(t, str) or "{text}" not in t for t in views):
        raise InputError('text pools take context templates containing "{text}", e.g. "Here is a passage: {text}"')
    for k in pool.keys:
        for cls in CLASSES:
            for t in views:
                ids = item_ids(handle, t.replace("{text}", k.item(cls)))
                rows.append(ids[-max_tokens:])
    return rows, len(views)


@torch.no_grad()
def pool_features(handle, pool: Pool, *, contexts: Sequence[str] | Sequence[int] | None = None,
                  depths: Sequence[int] | None = None, writes: Mapping[Key, WriteFn] | None = None,
                  max_tokens: int = 96, batch_size: int = 16, progress: bool = True) -> PoolFeatures:
    """Capture the last-token residual of every (key, class, view) at every depth in one pass.

    `writes` ({(layer, point): fn}) runs the capture with activation rewrites (hook-form edits).
    Rows are sorted by length before batching so padding stays small.
    """
    import time

    depths = tuple(range(handle.n_layers + 1)) if depths is None else tuple(sorted(set(depths)))
    if not depths or depths[0] < 0 or depths[-1] > handle.n_layers:
        raise InputError(f"depths must lie in 0..{handle.n_layers} (0 = embeddings), got {depths}")
    t0 = time.perf_counter()
    rows, n_views = pool_rows(handle, pool, contexts, max_tokens)
    keys = [depth_key(d) for d in depths]
    be = get_backend(handle, "torch")
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.zeros((len(depths), len(rows), handle.d_model), dtype=np.float32)
    n_tokens = 0
    for i in tqdm(range(0, len(rows), batch_size), disable=not progress, desc=f"signature {handle.id}"):
        idx = order[i: i + batch_size]
        batch = pad_rows([rows[j] for j in idx], handle.pad_id, device=handle.input_device)
        mask = batch["attention_mask"]
        n_tokens += int(mask.sum())
        res = be.run(batch["input_ids"], mask, reads=keys, writes=writes, stop_early=True)
        last = mask.sum(1) - 1
        for di, key in enumerate(keys):
            act = res.acts[key]                       # [batch, seq, d] on its layer's device
            rows_at = torch.arange(len(idx), device=act.device)
            out[di, idx] = act[rows_at, last.to(act.device)].float().cpu().numpy()
    acts = out.reshape(len(depths), len(pool.keys), 3, n_views, handle.d_model)
    return PoolFeatures(model=handle.id, pool=pool.name, keys=tuple(k.key for k in pool.keys), depths=depths,
                        acts=acts, n_tokens=n_tokens, seconds=time.perf_counter() - t0)
