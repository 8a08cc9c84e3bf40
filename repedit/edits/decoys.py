"""Decoy directions: a mitigation against the weight-diff attack on low-rank edits.

Whoever holds the base and the edited weights can take their difference, its top singular directions,
and read them out (repedit.verify.weight_diff). A rank-one edit is one direction: fully exposed. Decoys
add `n` further rank-one terms to the same matrix, each with a random output direction and a key
direction drawn from the edit's protected subspace (for ROCR: the null space of the key covariance, so
they barely fire on general text), and singular values 1–2× the real one, so the real direction is not
among the largest. The edit's claimed rank grows to 1 + n; what it costs is measured (neighbours,
perplexity), not assumed: see the README's weight-diff table.
"""

from __future__ import annotations

import torch

from repedit.errors import ConfigError


def decoy_factors(u: torch.Tensor, v: torch.Tensor, key_space: torch.Tensor, n: int, seed: int,
                  spread: tuple[float, float] = (1.0, 2.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors of `u vᵀ` plus `n` decoys: U [d_out, 1 + n], V [d_key, 1 + n] (u [d_out, 1], v [d_key, 1]).

    `key_space` [d_key, d_key]: projector onto the subspace decoy keys are drawn from."""
    if n < 0 or not 0 < spread[0] <= spread[1]:
        raise ConfigError("decoys need n >= 0 and 0 < spread[0] <= spread[1]")
    if n == 0:
        return u, v
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d_out, d_key = u.shape[0], v.shape[0]
    sigma = float(u.double().norm() * v.double().norm())
    a = torch.randn(d_out, n, generator=gen, dtype=torch.float64, device="cpu")
    b = key_space.double().cpu() @ torch.randn(d_key, n, generator=gen, dtype=torch.float64, device="cpu")
    scale = torch.empty(n, dtype=torch.float64, device="cpu").uniform_(*spread, generator=gen) * sigma
    # orthonormal and orthogonal to the real factors, so the SVD of the sum keeps the real term separate
    # (with 1-2x its singular value, it ranks below every decoy)
    a = torch.linalg.qr(torch.cat([u.double().cpu(), a], 1)).Q[:, 1:] * scale
    b = torch.linalg.qr(torch.cat([v.double().cpu(), b], 1)).Q[:, 1:]
    return (torch.cat([u, a.to(u.device, u.dtype)], 1), torch.cat([v, b.to(v.device, v.dtype)], 1))
