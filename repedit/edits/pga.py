"""PGA — probe-geometry alignment, closed-form variants (hook form).

At depth d (0 = embeddings, d ≥ 1 = output of layer d−1), in the standardised space of the probe
(z = (x − μ)/s, statistics of the pool's M and C activations at d), remove the span of U_k:
    x ← ((x − μ)/s · (I − U_k U_kᵀ)) ⊙ s + μ
- PGA (k = 1): U_1 = the unit logistic-regression readout direction (M vs C, all keys).
- MD-PGA k: U_k = eigenvectors with the largest |eigenvalue| of
  Σ_diff = (μ_M − μ_C)(μ_M − μ_C)ᵀ + (Σ_M − Σ_C).
- Adversarial PGA: with the projection active, re-extract activations, fit a fresh probe, and if its
  leave-one-key-out accuracy is ≥ `stop_below`, orthogonalise its direction against U and append;
  repeat up to `max_rounds`.
This is a hook (activation rewrite); it is not a weight edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from repedit.edits.rewrite import DepthRewrite
from repedit.errors import InputError
from repedit.fit.group_loo import logistic_group_loo, proba_accuracy, zscore_stats
from repedit.fit.pool_features import PoolFeatures, pool_features
from repedit.suites.pools import Pool


@dataclass(frozen=True)
class ProbeProjection(DepthRewrite):
    """Remove span(U) at one depth, in the standardised frame (μ, s). U [d, k] orthonormal."""

    depth: int
    mu: torch.Tensor
    scale: torch.Tensor
    U: torch.Tensor
    method: str = "pga"
    history: tuple = field(default_factory=tuple)     # adversarial rounds: (round, refit LOO accuracy)

    @property
    def k(self) -> int:
        return int(self.U.shape[1])

    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, d] → same; computed in float32 on x's device, cast once to x's dtype."""
        mu, s, U = (t.to(x.device, torch.float32) for t in (self.mu, self.scale, self.U))
        xf = x.float()
        z = (xf - mu) / s
        return (xf - ((z @ U) @ U.T) * s).to(x.dtype)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) [d, k] float64 with x − μ ← (I − A Bᵀ)(x − μ) and Bᵀ A = I (the fold's input)."""
        s, U = self.scale.double(), self.U.double()
        return U * s[:, None], U / s[:, None]



def _frame(feats: PoolFeatures, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if depth not in feats.depths:
        raise InputError(f"features lack depth {depth}; capture it (depths={list(feats.depths)})")
    X, y, groups = feats.task(feats.depths.index(depth), "memorised", "paraphrase_c")
    X = X.astype(np.float64)
    mu, sd = zscore_stats(X)
    return (X - mu) / sd, y, groups, mu, sd


def _probe_direction(Z: np.ndarray, y: np.ndarray, C: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    w = LogisticRegression(C=C, max_iter=2000).fit(Z, y).coef_[0]
    return w / np.linalg.norm(w)


def _md_directions(Z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    zm, zc = Z[y == 1], Z[y == 0]
    dmu = zm.mean(0) - zc.mean(0)
    sigma = np.outer(dmu, dmu) + np.cov(zm, rowvar=False) - np.cov(zc, rowvar=False)
    vals, vecs = np.linalg.eigh(sigma)
    order = np.argsort(-np.abs(vals))[:k]
    return vecs[:, order]


def _projection(depth, mu, sd, U, method, history=()) -> ProbeProjection:
    """Probe statistics (numpy) as float32 CPU tensors; `rewrite` moves them to the activations."""
    mu, sd, U = (torch.tensor(np.asarray(a), dtype=torch.float32, device="cpu") for a in (mu, sd, U))
    return ProbeProjection(depth, mu, sd, U, method, tuple(history))


def pga(handle_or_features, pool: Pool | None = None, *, depth: int, k: int = 1, method: str = "pga",
        **capture_kw) -> ProbeProjection:
    """Closed-form PGA (method="pga", k=1) or MD-PGA (method="md", k directions) at `depth`."""
    if method not in ("pga", "md"):
        raise InputError(f"method must be 'pga' or 'md', got {method!r}")
    if k < 1 or (method == "pga" and k != 1):
        raise InputError("PGA uses k=1 (the probe direction); use method='md' for k > 1")
    feats = handle_or_features if isinstance(handle_or_features, PoolFeatures) else \
        pool_features(handle_or_features, pool, depths=[depth], progress=False, **capture_kw)
    Z, y, _g, mu, sd = _frame(feats, depth)
    U = _probe_direction(Z, y)[:, None] if method == "pga" else _md_directions(Z, y, k)
    return _projection(depth, mu, sd, U, method)


def refit_loo(handle, pool: Pool, proj: ProbeProjection, **capture_kw) -> float:
    """Leave-one-key-out accuracy of a fresh logistic probe at the projection's depth, projection active."""
    feats = pool_features(handle, pool, depths=[proj.depth], writes=proj.writes(), progress=False, **capture_kw)
    Z, y, groups, _mu, _sd = _frame(feats, proj.depth)
    return proba_accuracy(logistic_group_loo(Z, y, groups), y, groups)


def adversarial_pga(handle, pool: Pool, *, depth: int, start: ProbeProjection | None = None,
                    stop_below: float = 0.55, max_rounds: int = 7, **capture_kw) -> ProbeProjection:
    """Grow U until a re-fitted probe's leave-one-key-out accuracy is below `stop_below` (or `max_rounds`)."""
    proj = start or pga(handle, pool, depth=depth, **capture_kw)
    history = []
    for rnd in range(max_rounds):
        feats = pool_features(handle, pool, depths=[depth], writes=proj.writes(), progress=False, **capture_kw)
        X, y, groups = feats.task(0, "memorised", "paraphrase_c")
        Z = (X.astype(np.float64) - proj.mu.double().numpy()) / proj.scale.double().numpy()   # original frame
        acc = proba_accuracy(logistic_group_loo(Z, y, groups), y, groups)
        history.append((rnd, acc, proj.k))
        if acc < stop_below:
            break
        w = _probe_direction(Z, y)
        U = proj.U.double().numpy()
        w = w - U @ (U.T @ w)
        if np.linalg.norm(w) < 1e-6:
            break
        U = np.hstack([U, (w / np.linalg.norm(w))[:, None]])
        proj = _projection(depth, proj.mu.numpy(), proj.scale.numpy(), U, "adversarial", history)
    return _projection(depth, proj.mu.numpy(), proj.scale.numpy(), proj.U.numpy(),
                       "adversarial" if len(history) > 1 else proj.method, history)
