"""The model's weights as values: hold other values for a block and restore the exact bytes, content hashes
of tensors and of every weight that reaches a layer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch


@contextmanager
def holding(handle, values: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> Iterator[list[str]]:
    """Inside the block the named parameters hold `values` (cast to their dtype; (name, value) pairs may
    come from a generator, computed one at a time); on exit, also on exceptions, every one gets its exact
    previous bytes back. No Edit, no journal: for attacks that look at another state of the same weights
    (quantised, base). Yields the names."""
    params = dict(handle.model.named_parameters())
    saved = {}
    try:
        with torch.no_grad():
            for name, value in (values.items() if isinstance(values, Mapping) else values):
                saved[name] = params[name].detach().clone()
                params[name].copy_(value)
        yield list(saved)
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (any dtype, any device; float32 hashes equal numpy's bytes)."""
    flat = t.detach().contiguous().reshape(-1)
    return hashlib.sha256(flat.cpu().view(torch.uint8).numpy().tobytes()).hexdigest()


def weights_fingerprint(handle, upto_layer: int) -> str:
    """sha256 (16 hex) of every parameter that can influence layer `upto_layer` (all but later layers).

    Per-parameter hashes are memoised on the handle by the tensor's in-place version counter, so an
    unchanged model is hashed once and an edit (which writes in place) is always seen."""
    memo = handle.extras.setdefault("param_sha256", {})
    later = tuple(f"{handle.layout.layers}.{i}." for i in range(upto_layer + 1, handle.n_layers))
    digest = hashlib.sha256()
    for name, p in handle.model.named_parameters():
        if name.startswith(later):
            continue
        stamp = (p.data_ptr(), p._version, p.dtype, tuple(p.shape))
        if memo.get(name, (None,))[0] != stamp:
            memo[name] = (stamp, tensor_sha256(p))
        digest.update(f"{name}:{memo[name][1]};".encode())
    return digest.hexdigest()[:16]
