"""Second moments of MLP keys (inputs of W_out) over general text, computed once and cached on disk.

C_l = E[k kᵀ] at layer l over the wiki + news training text, position 0 excluded (its massive
activations would dominate). One pass serves every requested layer; each layer's fitter is saved
as safetensors under a key naming everything the statistic depends on:
<cache>/stats/<model>/<weights>/mlp_hidden.L<l>.<dtype>.<corpus>-c<context>-n<tokens>.safetensors,
where <weights> is a content hash of every parameter that can reach layer l (all but later layers),
so an edited model, another dtype or another corpus never reuses another's statistics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from repedit.backends.base import get_backend
from repedit.fit.stats import MomentFitter, Moments
from repedit.forward.weights import weights_fingerprint
from repedit.models.cache import cache_root
from repedit.sites import Point

CORPUS = "wiki+news.train"
BATCH = 8          # texts per forward; sharded runs (repedit.distributed) split at these boundaries




def stats_path(handle, layer: int, n_tokens: int, *, corpus: str = CORPUS, context: int = 128) -> Path:
    """Where the key statistics of `layer` live, keyed by model, weights, dtype, corpus, context, tokens."""
    safe = handle.id.replace("/", "_").replace(":", "_")
    dtype = str(handle.matrix("mlp_out", layer).param.dtype).replace("torch.", "")
    name = f"mlp_hidden.L{layer}.{dtype}.{corpus}-c{context}-n{n_tokens}.safetensors"
    return cache_root() / "stats" / safe / weights_fingerprint(handle, layer) / name


def corpus_texts() -> list[str]:
    """The documents of `CORPUS` (wiki.train + news.train), in the order the statistics read them."""
    from repedit.suites import load_text

    return load_text("wiki", "train") + load_text("news", "train")


def key_moments(handle, layers: Sequence[int], *, n_tokens: int = 40_000, context: int = 128,
                progress: bool = True) -> tuple[dict[int, Moments], float]:
    """{layer: Moments of mlp_hidden} over ~n_tokens of general text, and the seconds spent computing
    (0 when everything came from the cache)."""
    layers = sorted({int(x) for x in layers})
    for layer in layers:
        handle.check_layer(layer)
    out, missing = {}, []
    for layer in layers:
        p = stats_path(handle, layer, n_tokens, context=context)
        if p.exists():
            out[layer] = MomentFitter.load(p).fit()
        else:
            missing.append(layer)
    if not missing:
        return out, 0.0
    t0 = time.perf_counter()
    fitters = key_fitters(handle, missing, corpus_texts(), n_tokens=n_tokens, context=context, progress=progress)
    out |= store_key_moments(handle, fitters, n_tokens, context=context)
    return out, time.perf_counter() - t0


def key_fitters(handle, layers: Sequence[int], texts: Sequence[str], *, n_tokens: int | None = None,
                context: int = 128, progress: bool = True) -> dict[int, MomentFitter]:
    """Streaming fitters of mlp_hidden at `layers` over `texts` (one shard; up to `n_tokens`).

    The scale path: each worker (GPU, machine) runs this on its own shard of the text and saves
    the fitters (`MomentFitter.save`); `MomentFitter.merge` combines them exactly, and
    `store_key_moments` puts the result where ROCR looks for it."""
    layers = sorted({int(x) for x in layers})
    for layer in layers:
        handle.check_layer(layer)
    fitters = {layer: MomentFitter(handle.d_mlp) for layer in layers}
    keys = [(layer, Point.MLP_HIDDEN) for layer in layers]
    be = get_backend(handle, "torch")
    seen = 0
    bar = tqdm(total=n_tokens, disable=not progress, desc=f"key statistics L{layers}")
    for i in range(0, len(texts), BATCH):
        batch = handle.encode(list(texts[i: i + BATCH]), max_length=context)
        mask = batch["attention_mask"].bool().clone()
        mask[:, 0] = False                                   # drop position 0 (massive activations)
        res = be.run(batch["input_ids"], batch["attention_mask"], reads=keys, stop_early=True)
        for layer in layers:
            fitters[layer].update(res.acts[(layer, Point.MLP_HIDDEN)].to(mask.device)[mask].float().cpu())
        n = int(mask.sum())
        seen += n
        bar.update(n)
        if n_tokens is not None and seen >= n_tokens:
            break
    bar.close()
    return fitters


def store_key_moments(handle, fitters: dict[int, MomentFitter], n_tokens: int, *,
                      context: int = 128) -> dict[int, Moments]:
    """Save fitters (e.g. merged from shards) as the cached key statistics for `n_tokens`; fitted moments."""
    out = {}
    for layer, f in fitters.items():
        p = stats_path(handle, layer, n_tokens, context=context)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        f.save(tmp)
        tmp.replace(p)
        out[layer] = f.fit()
    return out


def null_space(moments: Moments, rel_threshold: float) -> torch.Tensor:
    """Projector [d, d] onto eigen-directions of E[kkᵀ] below rel_threshold × the largest eigenvalue."""
    return moments.null_space_projector(rel_threshold)
