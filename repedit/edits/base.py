"""Edits as values: per-parameter deltas that are the single source for apply, revert, hook form and save.

A delta names one parameter (its `state_dict` name) and says how it changes:
- `LowRankDelta`: W ← W + U Vᵀ, factors in the parameter's storage layout (U [rows, r], V [cols, r]).
- `DenseDelta`: W ← W + D (full-matrix changes made by fine-tuning baselines; rank = rank of D).
- `ProjectorDelta`: W ← (I − QᵀQ) W (side "rows") or W (I − QᵀQ) (side "cols"), Q [k, n] orthonormal
  rows; on a 1-D parameter (a bias) "rows" projects the vector.
An `Edit` is a frozen bundle of deltas plus what made them (method, config, target, versions).
Applying never writes a parameter until every new value has been computed and checked (shapes,
finite values, the model the edit was made for); see `EditStack` for journaled, revertible use.

Precision (PEFT's rule for half-precision merges): every change is computed in float32 (float64 for
float64 parameters) on the parameter's device, added to the parameter's value in that precision and
cast once. The change the dtype actually keeps is compared with the intended one; an edit that the
dtype rounds away (more than `MAX_ROUNDED` of its norm lost) raises `PrecisionError` naming the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from repedit.errors import InputError, ReprEditError


class EditError(ReprEditError, ValueError):
    """An edit cannot be applied (wrong model, shape, non-finite values, not mergeable)."""


class PrecisionError(EditError):
    """The parameter's dtype rounds the edit away (bf16 / fp16 weights and a change below their spacing)."""


MAX_ROUNDED = 0.5      #: largest share of a delta's norm the parameter's dtype may round away


def compute_dtype(w: torch.Tensor) -> torch.dtype:
    """Precision a change to `w` is computed and added in: float64 for float64 weights, else float32."""
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def config_record(config: Any, **extra: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict: its class name and every field (tuples as lists)."""
    if config is None:
        return dict(extra)
    if not dataclasses.is_dataclass(config):
        raise InputError(f"config_record() takes a config dataclass, got {type(config).__name__}")
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    return {"class": type(config).__name__} | plain | extra


@dataclass(frozen=True)
class LowRankDelta:
    """W ← W + U Vᵀ. U [rows, r], V [cols, r] in the parameter's own layout."""

    param: str
    u: torch.Tensor
    v: torch.Tensor

    def __post_init__(self) -> None:
        if self.u.ndim != 2 or self.v.ndim != 2 or self.u.shape[1] != self.v.shape[1]:
            raise EditError(f"{self.param}: low-rank factors must be U [rows, r], V [cols, r]; "
                            f"got {tuple(self.u.shape)}, {tuple(self.v.shape)}")

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    def change(self, w: torch.Tensor) -> torch.Tensor:
        """U Vᵀ on w's device in the compute precision."""
        if w.ndim != 2 or w.shape != (self.u.shape[0], self.v.shape[0]):
            raise EditError(f"{self.param}: delta is {self.u.shape[0]}x{self.v.shape[0]}, "
                            f"parameter is {tuple(w.shape)}")
        cd = compute_dtype(w)
        return self.u.to(w.device, cd) @ self.v.to(w.device, cd).T

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"u": self.u, "v": self.v}


@dataclass(frozen=True)
class DenseDelta:
    """W ← W + D, D in the parameter's own shape (what gradient-based baselines produce)."""

    param: str
    d: torch.Tensor

    @property
    def rank(self) -> int:
        if self.d.ndim < 2:
            return int(bool(self.d.abs().max() > 0))
        return int(torch.linalg.matrix_rank(self.d.double(), rtol=1e-6))

    def change(self, w: torch.Tensor) -> torch.Tensor:
        if w.shape != self.d.shape:
            raise EditError(f"{self.param}: delta is {tuple(self.d.shape)}, parameter is {tuple(w.shape)}")
        return self.d.to(w.device, compute_dtype(w))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"d": self.d}


@dataclass(frozen=True)
class ProjectorDelta:
    """W ← (I − QᵀQ) W (side="rows") or W (I − QᵀQ) (side="cols"). Q [k, n] with orthonormal rows."""

    param: str
    q: torch.Tensor
    side: str = "rows"

    def __post_init__(self) -> None:
        if self.side not in ("rows", "cols"):
            raise EditError(f"{self.param}: side must be 'rows' or 'cols', got {self.side!r}")
        if self.q.ndim != 2:
            raise EditError(f"{self.param}: Q must be [k, n], got {tuple(self.q.shape)}")
        gram = self.q.double() @ self.q.double().T
        if not torch.allclose(gram, torch.eye(len(gram), dtype=gram.dtype, device=gram.device), atol=1e-4):
            raise EditError(f"{self.param}: Q's rows must be orthonormal (orthonormalise with torch.linalg.qr)")

    @property
    def rank(self) -> int:
        return int(self.q.shape[0])

    def change(self, w: torch.Tensor) -> torch.Tensor:
        """−QᵀQ W (rows) or −W QᵀQ (cols), on w's device in the compute precision."""
        cd = compute_dtype(w)
        q, wc = self.q.to(w.device, cd), w.to(cd)
        n = q.shape[1]
        if w.ndim == 1:
            if self.side != "rows" or w.shape[0] != n:
                raise EditError(f"{self.param}: cannot project a vector of {w.shape[0]} with Q [*, {n}] ({self.side})")
            return -(q.T @ (q @ wc))
        if self.side == "rows":
            if w.shape[0] != n:
                raise EditError(f"{self.param}: projector acts on {n} rows, parameter has {w.shape[0]}")
            return -(q.T @ (q @ wc))
        if w.shape[1] != n:
            raise EditError(f"{self.param}: projector acts on {n} columns, parameter has {w.shape[1]}")
        return -((wc @ q.T) @ q)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"q": self.q}


Delta = LowRankDelta | DenseDelta | ProjectorDelta


@dataclass(frozen=True)
class Written:
    """A delta's new parameter value (the parameter's dtype and device) and the share of the
    intended change its dtype rounded away (‖applied − intended‖ / ‖intended‖)."""

    value: torch.Tensor
    rounded: float


def new_value(delta: Delta, w: torch.Tensor) -> Written:
    """w + change, added in the compute precision and cast once to w's dtype."""
    change = delta.change(w)
    cd = change.dtype
    value = (w.to(cd) + change).to(w.dtype)
    scale = float(change.norm())
    rounded = float(((value.to(cd) - w.to(cd)) - change).norm()) / scale if scale > 0 else 0.0
    return Written(value, rounded)


@dataclass(frozen=True)
class Edit:
    """A mergeable weight edit: deltas applied in order, and the record of what produced them."""

    method: str
    deltas: tuple[Delta, ...]
    model_id: str
    config: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)      # measurements made while building it

    def __post_init__(self) -> None:
        if not self.deltas:
            raise EditError(f"{self.method}: an edit needs at least one delta")
        names = [d.param for d in self.deltas]
        if len(set(names)) != len(names):
            raise EditError(f"{self.method}: each parameter may appear once per edit; merge its deltas first")

    @property
    def params(self) -> list[str]:
        return [d.param for d in self.deltas]

    @property
    def rank(self) -> dict[str, int]:
        """Claimed rank of the change to each parameter."""
        return {d.param: d.rank for d in self.deltas}

    def new_values(self, handle) -> dict[str, Written]:
        """Every edited parameter's new value, computed on copies; raises before anything is written
        (non-finite values, or `PrecisionError` when the parameter's dtype rounds the change away)."""
        if handle.id != self.model_id:
            raise EditError(f"this {self.method} edit was made for {self.model_id!r}, not {handle.id!r}")
        params = dict(handle.model.named_parameters())
        out = {}
        for d in self.deltas:
            if d.param not in params:
                from repedit.errors import close_matches

                raise EditError(f"{self.method}: parameter {d.param!r} not in {handle.id} "
                                f"(close: {close_matches(d.param, params)})")
            w = params[d.param].detach()
            with torch.no_grad():
                new = new_value(d, w)
            if not torch.isfinite(new.value).all():
                raise EditError(f"{self.method}: applying the delta to {d.param} gives non-finite values; "
                                "nothing was changed")
            if new.rounded > MAX_ROUNDED:
                raise PrecisionError(
                    f"{self.method}: {d.param} is {str(w.dtype).replace('torch.', '')}, which rounds "
                    f"{new.rounded:.0%} of this change away (more than {MAX_ROUNDED:.0%}); nothing was changed. "
                    "Load the model in float32 (repedit.load(..., dtype=torch.float32); recipe [model] dtype = "
                    "\"float32\"), or make the change larger (e.g. a larger learning rate or more steps)")
            out[d.param] = new
        return out




def check_edit(edit: Any) -> Edit:
    if not isinstance(edit, Edit):
        raise InputError(f"expected an Edit, got {type(edit).__name__}; hook-only edits (e.g. SAE clamping) "
                         "cannot be merged: use their `active(handle)` context manager")
    return edit
