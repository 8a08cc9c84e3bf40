"""The model's weights as values: hold other values for a block and restore the exact bytes, content hashes
of tensors, of every weight that reaches a layer, and of a whole module (e.g. an SAE)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch

#: module -> (its tensors, their (data_ptr, version) stamps, the digest); weak keys: no id() reuse, no leak
_STATE_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def _config_record(config) -> str:
    """A module's configuration as sorted JSON (a dataclass's fields, else its __dict__, else repr); the
    device it sits on is left out (moving it changes no result)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    else:
        fields = dict(getattr(config, "__dict__", {})) or {"repr": repr(config)}
    return json.dumps({k: v for k, v in fields.items() if k != "device"}, sort_keys=True, default=str)


def state_fingerprint(module) -> str:
    """sha256 (16 hex) of a module's content: its class, its `cfg` (if any, less the device) and every parameter
    and buffer (name, dtype, shape, bytes). Memoised per module object (weakly): the memo holds its tensors and
    their in-place version counters, so an unchanged module is hashed once and a replaced tensor, a moved one
    or an in-place write is seen (writes through `.data` bypass the version counter and are not)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    stamps = tuple((name, t.data_ptr(), t._version) for name, t in tensors)
    try:
        held = _STATE_MEMO.get(module)
    except TypeError:                                       # not weakly referenceable: hashed every time
        held = None
    if held is not None and held[1] == stamps and all(a is b for a, (_, b) in zip(held[0], tensors)):
        return held[2]
    digest = hashlib.sha256(f"{type(module).__qualname__};{_config_record(getattr(module, 'cfg', None))};".encode())
    for name, t in tensors:
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}:{tensor_sha256(t)};".encode())
    value = digest.hexdigest()[:16]
    try:
        _STATE_MEMO[module] = (tuple(t for _, t in tensors), stamps, value)
    except TypeError:
        pass
    return value
