"""Edits as values: per-parameter deltas that are the single source for apply, revert, hook form and save.

A delta names one parameter (its `state_dict` name) and says how it changes:
- `LowRankDelta`: W ← W + U Vᵀ, factors in the parameter's storage layout (U [rows, r], V [cols, r]).
- `DenseDelta`: W ← W + D (full-matrix changes made by fine-tuning baselines; rank = rank of D).
- `ProjectorDelta`: W ← (I − QᵀQ) W (side "rows") or W (I − QᵀQ) (side "cols"), Q [k, n] orthonormal
  rows; on a 1-D parameter (a bias) "rows" projects the vector.
An `Edit` is a frozen bundle of deltas plus what made them (method, config, target, versions).
Applying never writes a parameter until every new value has been computed and checked (shapes,
finite values, the model the edit was made for); see `EditStack` for journaled, revertible use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError, ReprEditError


class EditError(ReprEditError, ValueError):
    """An edit cannot be applied (wrong model, shape, non-finite values, not mergeable)."""


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

    def new_value(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim != 2 or w.shape != (self.u.shape[0], self.v.shape[0]):
            raise EditError(f"{self.param}: delta is {self.u.shape[0]}x{self.v.shape[0]}, parameter is {tuple(w.shape)}")
        return w + (self.u.to(w.device, w.dtype) @ self.v.to(w.device, w.dtype).T)

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

    def new_value(self, w: torch.Tensor) -> torch.Tensor:
        if w.shape != self.d.shape:
            raise EditError(f"{self.param}: delta is {tuple(self.d.shape)}, parameter is {tuple(w.shape)}")
        return w + self.d.to(w.device, w.dtype)

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
        if not torch.allclose(gram, torch.eye(len(gram), dtype=gram.dtype), atol=1e-4):
            raise EditError(f"{self.param}: Q's rows must be orthonormal (orthonormalise with torch.linalg.qr)")

    @property
    def rank(self) -> int:
        return int(self.q.shape[0])

    def new_value(self, w: torch.Tensor) -> torch.Tensor:
        q = self.q.to(w.device, w.dtype)
        n = q.shape[1]
        if w.ndim == 1:
            if self.side != "rows" or w.shape[0] != n:
                raise EditError(f"{self.param}: cannot project a vector of {w.shape[0]} with Q [*, {n}] ({self.side})")
            return w - q.T @ (q @ w)
        if self.side == "rows":
            if w.shape[0] != n:
                raise EditError(f"{self.param}: projector acts on {n} rows, parameter has {w.shape[0]}")
            return w - q.T @ (q @ w)
        if w.shape[1] != n:
            raise EditError(f"{self.param}: projector acts on {n} columns, parameter has {w.shape[1]}")
        return w - (w @ q.T) @ q

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"q": self.q}


Delta = LowRankDelta | DenseDelta | ProjectorDelta


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

    def new_values(self, handle) -> dict[str, torch.Tensor]:
        """Every edited parameter's new value, computed on copies; raises before anything is written."""
        if handle.id != self.model_id:
            raise EditError(f"this {self.method} edit was made for {self.model_id!r}, not {handle.id!r}")
        params = dict(handle.model.named_parameters())
        out = {}
        for d in self.deltas:
            if d.param not in params:
                from ..errors import close_matches

                raise EditError(f"{self.method}: parameter {d.param!r} not in {handle.id} "
                                f"(close: {close_matches(d.param, params)})")
            with torch.no_grad():
                new = d.new_value(params[d.param].detach())
            if not torch.isfinite(new).all():
                raise EditError(f"{self.method}: applying the delta to {d.param} gives non-finite values; "
                                "nothing was changed")
            out[d.param] = new
        return out


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


def check_edit(edit: Any) -> Edit:
    if not isinstance(edit, Edit):
        raise InputError(f"expected an Edit, got {type(edit).__name__}; hook-only edits (e.g. SAE clamping) "
                         "cannot be merged: use their `active(handle)` context manager")
    return edit
