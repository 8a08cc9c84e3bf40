"""Second moments of MLP keys (inputs of W_out) over general text, computed once and cached on disk.

C_l = E[k kᵀ] at layer l over the wiki + news training text, position 0 excluded (its massive
activations would dominate). One pass serves every requested layer; each layer's fitter is saved
as safetensors under <cache>/stats/<model>/mlp_hidden.L<l>-n<tokens>.safetensors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..backends.base import get_backend
from ..models.cache import cache_root
from ..sites import Point
from ..stats import MomentFitter, Moments


def _path(handle, layer: int, n_tokens: int):
    safe = handle.id.replace("/", "_").replace(":", "_")
    return cache_root() / "stats" / safe / f"mlp_hidden.L{layer}-n{n_tokens}.safetensors"


def key_moments(handle, layers: Sequence[int], *, n_tokens: int = 40_000, context: int = 128,
                progress: bool = True) -> tuple[dict[int, Moments], float]:
    """{layer: Moments of mlp_hidden} over ~n_tokens of general text, and the seconds spent computing
    (0 when everything came from the cache)."""
    from ..suites import load_text

    layers = sorted({int(x) for x in layers})
    for layer in layers:
        handle.check_layer(layer)
    out, missing = {}, []
    for layer in layers:
        p = _path(handle, layer, n_tokens)
        if p.exists():
            out[layer] = MomentFitter.load(p).fit()
        else:
            missing.append(layer)
    if not missing:
        return out, 0.0
    t0 = time.perf_counter()
    fitters = {layer: MomentFitter(handle.d_mlp) for layer in missing}
    keys = [(layer, Point.MLP_HIDDEN) for layer in missing]
    be = get_backend(handle, "torch")
    texts = load_text("wiki", "train") + load_text("news", "train")
    seen = 0
    bar = tqdm(total=n_tokens, disable=not progress, desc=f"key statistics L{missing}")
    for i in range(0, len(texts), 8):
        batch = handle.encode(texts[i: i + 8], max_length=context)
        mask = batch["attention_mask"].bool().clone()
        mask[:, 0] = False                                   # drop position 0 (massive activations)
        res = be.run(batch["input_ids"], batch["attention_mask"], reads=keys, stop_early=True)
        for layer in missing:
            fitters[layer].update(res.acts[(layer, Point.MLP_HIDDEN)][mask].float())
        n = int(mask.sum())
        seen += n
        bar.update(n)
        if seen >= n_tokens:
            break
    bar.close()
    for layer, f in fitters.items():
        p = _path(handle, layer, n_tokens)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        f.save(tmp)
        tmp.replace(p)
        out[layer] = f.fit()
    return out, time.perf_counter() - t0


def null_space(moments: Moments, rel_threshold: float) -> torch.Tensor:
    """Projector [d, d] onto eigen-directions of E[kkᵀ] below rel_threshold × the largest eigenvalue."""
    return moments.null_space_projector(rel_threshold)
