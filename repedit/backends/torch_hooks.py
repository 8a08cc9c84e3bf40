"""The "torch" backend: plain PyTorch hooks on the model's own modules (fastest; the default)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

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


def hook_target(handle, key: Key) -> tuple[torch.nn.Module, str]:
    """(module, "pre" | "out"): where a (layer, point) lives in the module tree."""
    layer, point = key
    lay = handle.layout
    block = handle.layer_module(layer)
    if handle.is_toy:
        name = {Point.RESID_PRE: lay.resid_pre_hook, Point.RESID_POST: lay.resid_post_hook,
                Point.ATTN_OUT: lay.attn_writer, Point.MLP_HIDDEN: lay.mlp_hidden_hook,
                Point.MLP_OUT: lay.mlp_writer}[point]
        return block.get_submodule(name), "out"
    return {
        Point.RESID_PRE: (block, "pre"),
        Point.RESID_POST: (block, "out"),
        Point.ATTN_OUT: (block.get_submodule(lay.attn_writer), "out"),
        Point.MLP_HIDDEN: (block.get_submodule(lay.mlp_down), "pre"),
        Point.MLP_OUT: (block.get_submodule(lay.mlp_writer), "out"),
    }[point]


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x, new):
    return (new, *x[1:]) if isinstance(x, tuple) else new


class TorchBackend:
    name = "torch"

    def __init__(self, handle):
        self.handle = handle

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            reads: Sequence[Key] = (), writes: Mapping[Key, WriteFn] | None = None,
            stop_early: bool = False) -> RunResult:
        writes = dict(writes or {})
        check_keys(self.handle, list(reads) + list(writes))
        last = deepest(reads, writes) if stop_early else None
        acts: dict[Key, torch.Tensor] = {}
        handles = []

        def make(key: Key, kind: str):
            fn = writes.get(key)
            read = key in reads

            def on_value(value: torch.Tensor) -> torch.Tensor | None:
                new = fn(value) if fn is not None else None
                if read:
                    acts[key] = (new if new is not None else value).detach()
                if key == last:
                    raise StopForward
                return new

            if kind == "pre":
                def pre(_module, args, kwargs):
                    if args:
                        new = on_value(args[0])
                        return ((new, *args[1:]), kwargs) if new is not None else None
                    new = on_value(kwargs["hidden_states"])
                    return (args, {**kwargs, "hidden_states": new}) if new is not None else None
                return pre
            def post(_module, _args, output):
                new = on_value(_first(output))
                return _replace_first(output, new) if new is not None else None
            return post

        keys = sorted(set(reads) | set(writes), key=lambda k: (k[0], k[1].value))
        try:
            for key in keys:
                module, kind = hook_target(self.handle, key)
                if kind == "pre":
                    handles.append(module.register_forward_pre_hook(make(key, kind), with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(make(key, kind)))
            if len(handles) != len(keys):
                raise HookError(f"installed {len(handles)} hooks for {len(keys)} sites")
            logits = None
            try:
                logits = self.handle.forward(input_ids, attention_mask)
            except StopForward:
                pass
        finally:
            for h in handles:
                h.remove()
        expect_all_read(acts, reads, self.name)
        return RunResult(logits=logits, acts=acts)


register("torch")(TorchBackend)


@contextmanager
def installed(handle, writes: Mapping[Key, WriteFn]) -> Iterator[None]:
    """Keep activation rewrites {(layer, point): fn} as forward hooks for a `with` block (so generation
    and any other forward see them); every hook is removed on exit, also after an exception."""
    handles = []
    try:
        for key, fn in writes.items():
            check_keys(handle, [key])
            module, kind = hook_target(handle, key)
            if kind == "pre":
                def pre(_m, args, kwargs, fn=fn):
                    if args:
                        return (fn(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, fn=fn: _replace_first(out, fn(_first(out)))))
        yield
    finally:
        for h in handles:
            h.remove()
