"""Causal checks for located units: does ablating them hurt this concept and not others?

Effects are drops in the length-normalised answer log-prob (averaged over free-text forms):
`drop = logp(before) − logp(after)`, per fact. A location is supported when its target drop is
larger than the drop on other facts and larger than the drop caused by random units of the
same layer and count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from repedit.errors import InputError
from repedit.forward.answer_scores import answer_logprobs
from repedit.suites import Fact


@contextmanager
def columns_ablated(handle, layer: int, columns: Sequence[int], mode: str = "zero", noise_std: float = 0.1,
                    seed: int = 0) -> Iterator[None]:
    """Temporarily zero (or add N(0, noise_std²) to) value vectors of layer `layer`'s W_out;
    the original values are restored bit-exactly on exit, also after an exception."""
    if mode not in ("zero", "noise"):
        raise InputError(f"mode must be 'zero' or 'noise', got {mode!r}")
    ref = handle.matrix("mlp_out", layer)
    cols = torch.as_tensor(list(columns), dtype=torch.long, device=ref.param.device)
    if cols.numel() == 0 or int(cols.max()) >= handle.d_mlp or int(cols.min()) < 0:
        raise InputError(f"columns must be non-empty and within 0..{handle.d_mlp - 1}")
    w = ref.param.data
    view = w if ref.orientation == "in_out" else w.T   # rows = value vectors
    saved = view[cols].clone()
    try:
        with torch.no_grad():
            if mode == "zero":
                view[cols] = 0
            else:
                g = torch.Generator(device="cpu").manual_seed(seed)     # the same noise on every device
                noise = torch.randn(saved.shape, generator=g, device="cpu").to(saved.device, saved.dtype)
                view[cols] = saved + noise_std * noise
        yield
    finally:
        with torch.no_grad():
            view[cols] = saved


def neuron_writes(layer: int, neurons: Sequence[int], factor: float) -> dict:
    """Activation rewrite that scales MLP hidden units (all positions): 0 suppresses, 2 amplifies."""
    from repedit.sites import Point

    units = [int(u) for u in neurons]

    def fn(x: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(units, dtype=torch.long, device=x.device)
        x = x.clone()
        x[..., idx] = x[..., idx] * factor
        return x

    return {(layer, Point.MLP_HIDDEN): fn}


@dataclass(frozen=True)
class CausalCheck:
    """Answer log-prob drops (nats/token) when a location is ablated."""

    target_drop: float                 # mean over target facts
    other_drop: float                  # mean over other facts
    random_drops: tuple[float, ...]    # target drop for each random control of the same size
    per_fact: dict = field(repr=False, default_factory=dict)

    @property
    def random_drop(self) -> float:
        return sum(self.random_drops) / max(len(self.random_drops), 1)

    @property
    def specific(self) -> bool:
        """Target hurt more than other facts and more than the random controls' mean."""
        return self.target_drop > self.other_drop and self.target_drop > self.random_drop

    def to_dict(self) -> dict:
        return {"target_drop": self.target_drop, "other_drop": self.other_drop, "random_drops": list(self.random_drops),
                "random_drop": self.random_drop, "specific": self.specific}


def _drops(handle, facts, baseline, writes=None) -> torch.Tensor:
    return baseline - answer_logprobs(handle, facts, writes=writes)


def check_columns(handle, layer: int, columns: Sequence[int], target: Sequence[Fact], others: Sequence[Fact], *,
                  n_random: int = 5, mode: str = "zero", seed: int = 0) -> CausalCheck:
    """Ablate W_out columns of `layer` and compare with `n_random` random column sets of equal size."""
    if not target or not others:
        raise InputError("check_columns() needs target facts and other facts")
    base_t, base_o = answer_logprobs(handle, target), answer_logprobs(handle, others)
    with columns_ablated(handle, layer, columns, mode, seed=seed):
        t, o = _drops(handle, target, base_t), _drops(handle, others, base_o)
    g = torch.Generator(device="cpu").manual_seed(seed)
    rand = []
    for _ in range(n_random):
        cols = torch.randperm(handle.d_mlp, generator=g, device="cpu")[: len(columns)].tolist()
        with columns_ablated(handle, layer, cols, mode, seed=seed):
            rand.append(float(_drops(handle, target, base_t).mean()))
    return CausalCheck(float(t.mean()), float(o.mean()), tuple(rand),
                       {"target": t.tolist(), "others": o.tolist()})


def check_neurons(handle, layer_neurons: dict[int, Sequence[int]], target: Sequence[Fact], others: Sequence[Fact],
                  *, factor: float = 0.0, n_random: int = 5, seed: int = 0) -> CausalCheck:
    """Scale hidden units (per layer) by `factor` at inference; compare with random units."""
    if not target or not others:
        raise InputError("check_neurons() needs target facts and other facts")

    def writes_for(assign: dict[int, Sequence[int]]) -> dict:
        w = {}
        for layer, ns in assign.items():
            w.update(neuron_writes(layer, ns, factor))
        return w

    base_t, base_o = answer_logprobs(handle, target), answer_logprobs(handle, others)
    w = writes_for(layer_neurons)
    t, o = _drops(handle, target, base_t, w), _drops(handle, others, base_o, w)
    g = torch.Generator(device="cpu").manual_seed(seed)
    rand = []
    for _ in range(n_random):
        assign = {layer: torch.randperm(handle.d_mlp, generator=g, device="cpu")[: len(ns)].tolist()
                  for layer, ns in layer_neurons.items()}
        rand.append(float(_drops(handle, target, base_t, writes_for(assign)).mean()))
    return CausalCheck(float(t.mean()), float(o.mean()), tuple(rand), {"target": t.tolist(), "others": o.tolist()})
