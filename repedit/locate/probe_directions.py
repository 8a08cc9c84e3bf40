"""Probe directions: linear probes at a site, cross-validated, with a readout direction in model space.

Two methods:
- ``logistic``: standardise (z = (x − μ)/s), L2 logistic regression (C = 1.0 by default); the
  readout direction in model space is w = coef / s, normalised.
- ``diff_means``: w = μ₁ − μ₀, normalised; threshold at the midpoint of the projected means.
Evaluation: stratified k-fold, or leave-one-group-out when `groups` is given (e.g. one group per
key text, so a probe is tested on texts it never saw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from repedit.errors import InputError
from repedit.forward.capture import capture
from repedit.sites import Site

METHODS = ("logistic", "diff_means")


@dataclass(frozen=True)
class ProbeDirection:
    """A fitted probe. `direction` is a unit vector in model space [d]; `__call__` scores rows."""

    site: Site | None
    method: str
    direction: torch.Tensor          # [d], unit norm, points towards label 1
    weight: torch.Tensor             # [d], raw-space weight: score = x·weight + bias
    bias: float
    cv_accuracy: float               # mean held-out accuracy over folds
    fold_accuracies: tuple[float, ...] = field(repr=False)
    chance: float = 0.5              # accuracy of always predicting the majority class
    n: int = 0

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """Scores [n] (positive = label 1) of activations [n, d]."""
        if acts.ndim != 2 or acts.shape[1] != self.weight.shape[0]:
            raise InputError(f"expected activations [n, {self.weight.shape[0]}], got {tuple(acts.shape)}")
        return acts.float() @ self.weight.to(acts.device) + self.bias

    def predict(self, acts: torch.Tensor) -> torch.Tensor:
        return (self(acts) > 0).long()

    def accuracy(self, acts: torch.Tensor, labels: torch.Tensor) -> float:
        labels = torch.as_tensor(labels, device=acts.device).long()
        return float((self.predict(acts) == labels).float().mean())


def _fit_once(x: np.ndarray, y: np.ndarray, method: str, C: float, seed: int) -> tuple[np.ndarray, float]:
    """(weight in raw space [d], bias) for one training set."""
    if method == "diff_means":
        mu1, mu0 = x[y == 1].mean(0), x[y == 0].mean(0)
        w = mu1 - mu0
        return w, float(-w @ (mu1 + mu0) / 2)
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    return w, float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())


def _folds(y: np.ndarray, folds: int, groups: np.ndarray | None, seed: int) -> list[np.ndarray]:
    if groups is not None:
        return [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    test_sets: list[list[int]] = [[] for _ in range(folds)]
    for label in np.unique(y):  # stratified
        idx = rng.permutation(np.flatnonzero(y == label))
        for i, j in enumerate(idx):
            test_sets[i % folds].append(int(j))
    return [np.array(sorted(t)) for t in test_sets if t]


def fit_probe(acts: torch.Tensor, labels: Sequence[int] | torch.Tensor, *, method: str = "logistic",
              C: float = 1.0, folds: int = 5, groups: Sequence | None = None, seed: int = 0,
              site: Site | None = None) -> ProbeDirection:
    """Fit a probe on activations [n, d] with binary labels [n]; cross-validate; refit on all."""
    if method not in METHODS:
        raise InputError(f"unknown probe method {method!r}; valid: {list(METHODS)}")
    x = (acts.detach().float().cpu() if isinstance(acts, torch.Tensor) else np.asarray(acts, dtype=np.float32))
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    if x.ndim != 2 or len(x) != len(y):
        raise InputError(f"acts must be [n, d] with n = len(labels); got {x.shape} and {len(y)} labels")
    if set(np.unique(y)) != {0, 1}:
        raise InputError("labels must contain both classes 0 and 1")
    if C <= 0:
        raise InputError(f"C must be positive, got {C}")
    g = None if groups is None else np.asarray(list(groups))
    if g is None and not 2 <= folds <= min(np.bincount(y)):
        raise InputError(f"folds must be in 2..{min(np.bincount(y))} (the smaller class size), got {folds}")
    accs = []
    for test in _folds(y, folds, g, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(np.unique(y[train])) < 2:
            continue
        w, b = _fit_once(x[train], y[train], method, C, seed)
        accs.append(float((((x[test] @ w + b) > 0).astype(int) == y[test]).mean()))
    w, b = _fit_once(x, y, method, C, seed)
    weight = torch.tensor(w, dtype=torch.float32, device="cpu")     # moved to the activations when scoring
    return ProbeDirection(site=site, method=method, direction=weight / weight.norm(), weight=weight, bias=b,
                          cv_accuracy=float(np.mean(accs)), fold_accuracies=tuple(accs),
                          chance=float(max(np.bincount(y)) / len(y)), n=len(y))


def probe_texts(handle, positive: Sequence[str], negative: Sequence[str], site: Site, *,
                method: str = "logistic", folds: int = 5, backend: str = "torch", **kwargs) -> ProbeDirection:
    """Capture `site` on two text sets and fit a probe separating them (label 1 = positive)."""
    if not positive or not negative:
        raise InputError("probe_texts() needs non-empty positive and negative text lists")
    acts = capture(handle, list(positive) + list(negative), [site], backend=backend)[site]
    labels = [1] * len(positive) + [0] * len(negative)
    return fit_probe(acts, labels, method=method, folds=folds, site=site, **kwargs)
