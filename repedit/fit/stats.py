"""Streaming moments: a fitter updated in one pass (O(d²) memory) that yields a frozen result.

`MomentFitter.update(x)` takes rows [n, d]; `fit()` returns `Moments` (mean, uncentred second
moment E[x xᵀ], covariance). Fitters save and resume through safetensors; sums are kept in
float64 so one pass over millions of tokens stays exact to float32 precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from repedit.errors import InputError


@dataclass(frozen=True)
class Moments:
    """Frozen statistics of n rows of dimension d."""

    n: int
    mean: torch.Tensor           # [d]
    second_moment: torch.Tensor  # [d, d]  E[x xᵀ] (uncentred)

    @property
    def covariance(self) -> torch.Tensor:  # [d, d], unbiased
        c = self.second_moment - torch.outer(self.mean, self.mean)
        return c * (self.n / max(self.n - 1, 1))

    def null_space_projector(self, rel_threshold: float = 2e-2, centred: bool = False) -> torch.Tensor:
        """P = U₀U₀ᵀ over eigenvectors whose eigenvalue is below `rel_threshold` × the largest
        (of E[xxᵀ] by default, of the covariance if `centred`). [d, d]."""
        mat = self.covariance if centred else self.second_moment
        vals, vecs = torch.linalg.eigh(mat.double())
        keep = vecs[:, vals < rel_threshold * vals.max()]
        return (keep @ keep.T).to(self.mean.dtype)


class MomentFitter:
    """Accumulates Σx and Σxxᵀ over batches of rows."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """`dtype`: of the fitted moments; sums are float64 on `device` (rows are moved there)."""
        if not isinstance(dim, int) or dim <= 0:
            raise InputError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.dtype = dtype
        self.n = 0
        self._sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self._outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> MomentFitter:
        """Add rows x [n, d] (any leading shape is flattened)."""
        if x.shape[-1] != self.dim:
            raise InputError(f"expected rows of dimension {self.dim}, got shape {tuple(x.shape)}")
        x = x.reshape(-1, self.dim).to(self._sum.device, torch.float64)
        if not torch.isfinite(x).all():
            raise InputError("update() got non-finite values; filter them before fitting")
        self.n += x.shape[0]
        self._sum += x.sum(0)
        self._outer += x.T @ x
        return self

    def merge(self, other: MomentFitter) -> MomentFitter:
        """Combine with a fitter that saw other rows (e.g. another shard or device)."""
        if other.dim != self.dim:
            raise InputError(f"cannot merge fitters of dimension {self.dim} and {other.dim}")
        self.n += other.n
        self._sum += other._sum.to(self._sum.device)
        self._outer += other._outer.to(self._outer.device)
        return self

    def sums(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(n, Σx [d], Σxxᵀ [d, d]): the float64 state that merging adds (e.g. an all_reduce over ranks)."""
        return self.n, self._sum, self._outer

    @classmethod
    def from_sums(cls, n: int, total: torch.Tensor, outer: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> MomentFitter:
        """A fitter holding these sums (n rows, Σx [d], Σxxᵀ [d, d]; kept in float64 on their device)."""
        fitter = cls(int(total.shape[-1]), dtype, device=total.device)
        if tuple(outer.shape) != (fitter.dim, fitter.dim) or int(n) < 0:
            raise InputError(f"sums do not fit: n={n}, Σx {tuple(total.shape)}, Σxxᵀ {tuple(outer.shape)}")
        fitter.n, fitter._sum, fitter._outer = int(n), total.double(), outer.to(total.device, torch.float64)
        return fitter

    def fit(self) -> Moments:
        if self.n == 0:
            raise InputError("fit() before any update(): feed at least one row")
        mean = self._sum / self.n
        return Moments(n=self.n, mean=mean.to(self.dtype), second_moment=(self._outer / self.n).to(self.dtype))

    def save(self, path: str | Path) -> None:
        save_file({"sum": self._sum.cpu(), "outer": self._outer.cpu(),
                   "n": torch.tensor([self.n], dtype=torch.int64, device="cpu")},
                  str(path), metadata={"kind": "repedit.MomentFitter", "dim": str(self.dim)})

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> MomentFitter:
        t = load_file(str(path))
        fitter = cls(int(t["sum"].shape[0]), dtype)
        fitter._sum, fitter._outer, fitter.n = t["sum"], t["outer"], int(t["n"][0])
        return fitter
