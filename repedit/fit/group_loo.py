"""Leave-one-group-out linear probes without refitting from scratch.

`ridge_group_loo`: exact closed form. For ridge with an unpenalised intercept,
A = XᵀX + αD (D = identity without the intercept entry), hat matrix H = X A⁻¹ Xᵀ, and for a
held-out group G the refit-without-G prediction is
    ŷ_G^(−G) = y_G − (I − H_GG)⁻¹ (y_G − ŷ_G),
so one factorisation serves every fold and every label vector (true labels, shuffled controls).
It equals scikit-learn's `Ridge(alpha, fit_intercept=True)` refit per fold (tested).

`logistic_group_loo`: L2 logistic regression per fold, warm-started from the full-data fit.
The objective is strictly convex, so the start changes only the iterations, not the optimum
(within the solver tolerance); this is why warm starts are allowed here and not for MLPs.
"""

from __future__ import annotations

import warnings

import numpy as np

from repedit.errors import InputError


def _check(X: np.ndarray, groups: np.ndarray) -> None:
    if X.ndim != 2 or X.shape[0] != len(groups):
        raise InputError(f"X must be [n, d] with one group per row; got X {X.shape}, groups {len(groups)}")
    if len(np.unique(groups)) < 3:
        raise InputError("leave-one-group-out needs at least 3 groups")
    if not np.isfinite(X).all():
        raise InputError("features contain NaN or inf")


def zscore_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature of X [n, d]; a constant feature gets std 1 (it maps to 0)."""
    sd = X.std(0)
    return X.mean(0), np.where(sd > 0, sd, 1.0)


def standardise(X: np.ndarray) -> np.ndarray:
    """Per-feature z-score with statistics of all rows (label-free); constant features become 0."""
    mu, sd = zscore_stats(X)
    return (X - mu) / sd


def shuffled_within_groups(y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Labels permuted inside each group (the shuffled-label control keeps every group balanced)."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = rng.permutation(out[idx])
    return out


def ridge_group_loo(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Held-out decision values of ridge regression for every group left out.

    X [n, d]; Y [n] or [n, v] regression targets (±1 for classification, several label vectors
    at once); groups [n]. Returns [n] or [n, v]: row i is predicted by the fit without i's group.
    """
    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups)
    _check(X, groups)
    if alpha <= 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    Y = np.asarray(Y, dtype=np.float64)
    vec = Y.ndim == 1
    Y = Y[:, None] if vec else Y
    n, d = X.shape
    Xa = np.hstack([X, np.ones((n, 1))])
    A = Xa.T @ Xa
    A[np.arange(d), np.arange(d)] += alpha                 # intercept (last) is not penalised
    cho = np.linalg.cholesky(A)
    Z = np.linalg.solve(cho, Xa.T)                           # L⁻¹ Xaᵀ  [d+1, n]
    H = Z.T @ Z                                              # Xa A⁻¹ Xaᵀ  [n, n]
    fitted = H @ Y
    out = np.empty_like(Y)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        resid = Y[idx] - fitted[idx]
        out[idx] = Y[idx] - np.linalg.solve(np.eye(len(idx)) - H[np.ix_(idx, idx)], resid)
    return out[:, 0] if vec else out


def naive_ridge_group_loo(X: np.ndarray, y: np.ndarray, groups: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Reference: scikit-learn Ridge refit from scratch for every held-out group."""
    from sklearn.linear_model import Ridge

    out = np.empty(len(y))
    for g in np.unique(groups):
        test = groups == g
        out[test] = Ridge(alpha=alpha).fit(X[~test], y[~test]).predict(X[test])
    return out


def logistic_group_loo(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, C: float = 1.0,
                       seed: int = 0, warm: bool = True, max_iter: int = 2000, tol: float = 1e-4) -> np.ndarray:
    """Held-out P(y=1) of L2 logistic regression per left-out group (y in {0, 1})."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups)
    _check(X, groups)
    y = np.asarray(y)
    if set(np.unique(y)) - {0, 1}:
        raise InputError("logistic_group_loo takes labels in {0, 1}")
    out = np.empty(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=seed).fit(X, y) if warm else None
        for g in np.unique(groups):
            test = groups == g
            clf = LogisticRegression(C=C, max_iter=max_iter, tol=tol, random_state=seed, warm_start=warm)
            if warm:
                clf.coef_, clf.intercept_ = full.coef_.copy(), full.intercept_.copy()
            clf.fit(X[~test], y[~test])
            out[test] = clf.predict_proba(X[test])[:, 1]
    return out


def mlp_group_loo(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, hidden: tuple[int, ...] = (16,),
                  seed: int = 0, max_iter: int = 500) -> np.ndarray:
    """Held-out P(y=1) of a small MLP probe, trained from a fresh seeded init for every fold."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups)
    _check(X, groups)
    out = np.empty(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for g in np.unique(groups):
            test = groups == g
            clf = MLPClassifier(hidden_layer_sizes=hidden, random_state=seed, max_iter=max_iter)
            clf.fit(X[~test], y[~test])
            out[test] = clf.predict_proba(X[test])[:, 1]
    return out


TIE = 1e-4   # |decision value| below this is a tie (identical features leave ~1e-6 solver noise): half right


def correct(decision: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """1 where the sign of `decision` matches `positive` (bool), 0 where not, 0.5 on a tie."""
    hit = ((decision > 0) == positive).astype(np.float64)
    return np.where(np.abs(decision) < TIE, 0.5, hit)


def proba_accuracy(proba: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the accuracy of held-out P(y=1) against labels y in {0, 1}."""
    return float(per_group_accuracy(correct(proba - 0.5, y == 1), groups).mean())


def per_group_accuracy(correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Accuracy of each group, in sorted group order: [n_groups] (or [n_groups, v])."""
    return np.stack([correct[groups == g].mean(0) for g in np.unique(groups)])
