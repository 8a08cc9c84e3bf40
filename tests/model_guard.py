"""A guard on the session's shared models: after every test they hold the weights, gradients, train/eval
modes, requires_grad flags and hooks they had when loaded (transformers' own output recorders, which it
installs on a model's first call that asks for hidden states, are part of the model); a test that changed
them fails at teardown, and the model is put back (from a copy taken at load) so that no later test inherits the change.

What is compared, per parameter, is chosen to be cheap (about 10 ms per SmolLM2 handle, so the default suite
grows by well under a minute) and to see every kind of write:
- the autograd version counter sees every in-place write through the parameter (`p.copy_`, `p.add_`,
  optimiser steps); such a parameter is then compared in full with its copy (apply + revert moves the counter
  and leaves the bytes equal);
- the storage pointer sees a replaced tensor (`p.data = x`);
- writes through `.data` bypass the version counter: the exact bit patterns of a strided sample of the
  elements, summed with random odd integer weights, see them. A matrix [r, c] is read every s-th element,
  s the largest prime ≤ min(r, c) that does not divide c, so every row (c ≥ s consecutive elements) and
  every column (r ≥ s elements c apart, c invertible mod s) holds a sampled element: a change of a whole
  row, a whole column, or of rank one (which moves every element in general) is always seen. Vectors are
  read whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_INT_OF = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def stride_for(shape: tuple[int, ...]) -> int:
    """The sampling stride of a parameter: 1 for a vector, else the largest prime s ≤ min(rows, columns) that
    does not divide the row length (the leading dimensions count as rows)."""
    if len(shape) < 2:
        return 1
    cols = shape[-1]
    rows = 1
    for n in shape[:-1]:
        rows *= n
    s = min(rows, cols)
    while s > 1 and not (_is_prime(s) and cols % s):
        s -= 1
    return max(s, 1)


def _sample_sum(t: torch.Tensor, stride: int, weights: torch.Tensor) -> int:
    """A weighted sum of the bit patterns of every stride-th element, as integers (no rounding can hide a change)
    with random odd weights (a change that moves some patterns up and others down cannot cancel out, as it
    can in a plain sum: adding a constant to a row moves positive and negative floats' patterns oppositely)."""
    flat = t.detach().reshape(-1)
    bits = flat.view(_INT_OF[flat.element_size()])[::stride].to(torch.int64)
    return int((bits * weights.to(bits.device)).sum())


def _weights(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, 2 ** 31, (n,), generator=gen, dtype=torch.int64, device="cpu") * 2 + 1


def _owner(fn) -> str:
    """The module that defined a hook function (looking through functools.partial)."""
    while hasattr(fn, "func"):
        fn = fn.func
    return getattr(fn, "__module__", None) or ""


@dataclass
class ModelGuard:
    """The state of one handle's model at load, and `check()` against it."""

    handle: object
    names: list[str] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    stamps: list[tuple[int, int, int]] = field(default_factory=list)
    copies: dict[str, torch.Tensor] = field(default_factory=dict)
    requires_grad: list[bool] = field(default_factory=list)
    modes: list[bool] = field(default_factory=list)
    hooks: list[tuple[set, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        model = self.handle.model
        params = dict(model.named_parameters())
        self.names = list(params)
        self.strides = [stride_for(tuple(p.shape)) for p in params.values()]
        self.weights = [_weights(-(-p.numel() // s), i) for i, (p, s) in enumerate(zip(params.values(), self.strides))]
        self.stamps = self._stamps(params.values())
        self.copies = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        self.requires_grad = [p.requires_grad for p in params.values()]
        self.modes = [m.training for m in model.modules()]
        self.hooks = [tuple(set(getattr(m, d)) for d in _HOOK_DICTS) for m in model.modules()]

    def _stamps(self, params) -> list[tuple[int, int, int]]:
        return [(p.data_ptr(), p._version, _sample_sum(p, s, w)) for p, s, w in zip(params, self.strides, self.weights)]

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
        stamps = self._stamps(params.values())
        for (name, p), stamp, now, wanted in zip(params.items(), self.stamps, stamps, self.requires_grad):
            if p.grad is not None:
                problems.append(f"{name} has a gradient left on it")
                p.grad = None
            if p.requires_grad != wanted:
                problems.append(f"{name}.requires_grad is {p.requires_grad}, was {wanted}")
                p.requires_grad_(wanted)
            replaced = now[0] != stamp[0]
            changed = now[2] != stamp[2] or (
                now[1] != stamp[1] and not torch.equal(p.detach().cpu(), self.copies[name]))
            if replaced or changed:
                problems.append(f"{name} was replaced" if replaced else f"{name}'s values changed")
                self._restore(name, p, replaced)
        self.stamps = self._stamps(params.values()) if problems else stamps
        for m, mode in zip(model.modules(), self.modes):
            if m.training != mode:
                problems.append(f"{type(m).__name__} left in {'train' if m.training else 'eval'} mode")
                m.train(mode)
        for m, known in zip(model.modules(), self.hooks):
            for d, keys in zip(_HOOK_DICTS, known):
                hooks = getattr(m, d)
                for key in [k for k in hooks if k not in keys]:
                    if _owner(hooks[key]).startswith("transformers."):
                        keys.add(key)          # transformers' own output recorders, installed on first use
                        continue
                    problems.append(f"{type(m).__name__}.{d} holds a hook left behind ({_owner(hooks[key])})")
                    del hooks[key]
        return problems
