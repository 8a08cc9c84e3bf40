"""The "lens" backend: TransformerLens hook points.

HF models run through a `TransformerBridge`. Booting a bridge rewrites the HF module tree it is
given, so it boots on a structural copy whose parameters and buffers are *the same tensors* as
the handle's model: weight edits on the handle show up in the bridge, and the handle's model
stays a plain HF module that saves normally. Toy models are `HookedTransformer`s already.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from repedit.backends.base import (
    Key,
    RunResult,
    StopForward,
    WriteFn,
    check_keys,
    deepest,
    expect_all_read,
    register,
)
from repedit.errors import HookError
from repedit.sites import Point

TL_NAMES = {Point.RESID_PRE: "hook_resid_pre", Point.RESID_POST: "hook_resid_post",
            Point.ATTN_OUT: "hook_attn_out", Point.MLP_HIDDEN: "mlp.hook_post", Point.MLP_OUT: "hook_mlp_out"}


def hook_name(key: Key) -> str:
    return f"blocks.{key[0]}.{TL_NAMES[key[1]]}"


def boot_bridge(handle):
    """A TransformerBridge sharing every parameter and buffer with `handle.model`."""
    from transformer_lens.model_bridge import TransformerBridge

    model = handle.model
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    twin = copy.deepcopy(model, memo)
    bridge = TransformerBridge.boot_transformers(handle.source, hf_model=twin, device=handle.device,
                                                 tokenizer=handle.tokenizer)
    shared = {p.data_ptr() for p in bridge.parameters()}
    if any(p.data_ptr() not in shared for p in model.parameters()):
        raise HookError("the TransformerBridge does not share weights with the model; refusing to use it")
    return bridge


class LensBackend:
    name = "lens"

    def __init__(self, handle):
        self.handle = handle
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = self.handle.model if self.handle.is_toy else boot_bridge(self.handle)
        return self._model

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            reads: Sequence[Key] = (), writes: Mapping[Key, WriteFn] | None = None,
            stop_early: bool = False) -> RunResult:
        writes = dict(writes or {})
        check_keys(self.handle, list(reads) + list(writes))
        last = deepest(reads, writes) if stop_early else None
        acts: dict[Key, torch.Tensor] = {}

        def make(key: Key):
            fn = writes.get(key)

            def hook(value, hook):  # noqa: ARG001 - TransformerLens signature
                new = fn(value) if fn is not None else None
                if key in reads:
                    acts[key] = (new if new is not None else value).detach()
                if key == last:
                    raise StopForward
                return new

            return hook

        keys = sorted(set(reads) | set(writes), key=lambda k: (k[0], k[1].value))
        fwd_hooks = [(hook_name(k), make(k)) for k in keys]
        model = self.model
        logits = None
        with model.hooks(fwd_hooks=fwd_hooks):
            try:
                if self.handle.is_toy:
                    logits = model(input_ids, return_type="logits")
                else:
                    logits = model(input_ids, attention_mask=attention_mask, return_type="logits")
            except StopForward:
                pass
        expect_all_read(acts, reads, self.name)
        return RunResult(logits=logits, acts=acts)


register("lens")(LensBackend)
