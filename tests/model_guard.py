"""A guard on the session's shared models: after every test they hold the weights, gradients, train/eval
modes, requires_grad flags and hooks they had when loaded; a test that changed them fails at teardown,
and the model is put back (from a copy taken at load) so that no later test inherits the change.

What is compared, per parameter, is chosen to be cheap (the default suite grows by well under a minute)
and to see every kind of write: the autograd version counter sees every in-place write through the
parameter (`p.copy_`, `p.add_`, optimiser steps) and such a parameter is then compared in full with its
copy (apply + revert leaves the counter moved and the bytes equal); the storage pointer sees a replaced
tensor (`p.data = x`); the exact bit patterns of a 1-in-97 sample of the elements see writes through
`.data`, which bypass the version counter (a rank-one change, a row or a column is always sampled: 97 is
prime, so no row length of a real model is a multiple of it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

STRIDE = 97
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _sample_sum(t: torch.Tensor) -> int:
    """Exact sum of the bit patterns of every STRIDE-th element (as integers: no rounding can hide a change)."""
    flat = t.detach().reshape(-1)
    return int(flat.view(_INT_OF[flat.element_size()])[::STRIDE].sum(dtype=torch.int64))


def _stamp(p: torch.Tensor) -> tuple[int, int, int]:
    return (p.data_ptr(), p._version, _sample_sum(p))


@dataclass
class ModelGuard:
    """The state of one handle's model at load, and `check()` against it."""

    handle: object
    names: list[str] = field(default_factory=list)
    stamps: list[tuple[int, int, int]] = field(default_factory=list)
    copies: dict[str, torch.Tensor] = field(default_factory=dict)
    requires_grad: list[bool] = field(default_factory=list)
    modes: list[bool] = field(default_factory=list)
    hooks: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        model = self.handle.model
        params = dict(model.named_parameters())
        self.names = list(params)
        self.stamps = [_stamp(p) for p in params.values()]
        self.copies = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        self.requires_grad = [p.requires_grad for p in params.values()]
        self.modes = [m.training for m in model.modules()]
        self.hooks = [tuple(len(getattr(m, d)) for d in _HOOK_DICTS) for m in model.modules()]

    def _restore(self, name: str, p: torch.Tensor, replaced: bool) -> None:
        with torch.no_grad():
            if replaced:
                p.data = self.copies[name].to(p.device, copy=True)
            else:
                p.copy_(self.copies[name].to(p.device))

    def check(self) -> list[str]:
        """What differs from the state at load (empty when nothing does); every difference is then undone."""
        model = self.handle.model
        params = dict(model.named_parameters())
        if list(params) != self.names:
            return [f"parameters added or removed: {sorted(set(params) ^ set(self.names))[:5]}"]
        problems = []
        for (name, p), stamp, wanted in zip(params.items(), self.stamps, self.requires_grad):
            if p.grad is not None:
                problems.append(f"{name} has a gradient left on it")
                p.grad = None
            if p.requires_grad != wanted:
                problems.append(f"{name}.requires_grad is {p.requires_grad}, was {wanted}")
                p.requires_grad_(wanted)
            now = _stamp(p)
            replaced = now[0] != stamp[0]
            changed = now[2] != stamp[2] or (
                now[1] != stamp[1] and not torch.equal(p.detach().cpu(), self.copies[name]))
            if replaced or changed:
                problems.append(f"{name} was replaced" if replaced else f"{name}'s values changed")
                self._restore(name, p, replaced)
        self.stamps = [_stamp(p) for p in params.values()]
        for m, mode in zip(model.modules(), self.modes):
            if m.training != mode:
                problems.append(f"{type(m).__name__} left in {'train' if m.training else 'eval'} mode")
                m.train(mode)
        for m, counts in zip(model.modules(), self.hooks):
            for d, n in zip(_HOOK_DICTS, counts):
                hooks = getattr(m, d)
                if len(hooks) != n:
                    problems.append(f"{type(m).__name__}.{d} holds {len(hooks)} hooks, had {n}")
                    for key in list(hooks)[n:]:
                        del hooks[key]
        return problems
