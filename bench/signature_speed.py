"""Speed of the memorisation signature: closed-form leave-one-key-out vs naive per-fold refits.

Prints (1) the wall time of a full signature on the default model (capture of every depth in one
pass, probes, shuffled controls, random-init control), (2) the ratio of repedit's closed-form
ridge LOO to scikit-learn refitting per fold on the same features: Ridge (same estimator, same
numbers, checked) at every depth, and the reference StandardScaler+LogisticRegression pipeline
(timed on a few depths, reported per depth and extrapolated to all depths, labelled as such).
Goal: >= 20x.
"""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.fit.group_loo import (  # noqa: E402
    correct,
    naive_ridge_group_loo,
    per_group_accuracy,
    shuffled_within_groups,
    standardise,
)
from repedit.fit.pool_features import pool_features  # noqa: E402
from repedit.fit.pool_screen import screened  # noqa: E402
from repedit.suites.pools import load_pool  # noqa: E402
from repedit.verify.controls import random_init_twin  # noqa: E402
from repedit.verify.signature import ALPHA, depth_curve  # noqa: E402

SHUFFLE_SEEDS = range(5)


def label_vectors(y, groups):
    return [y] + [shuffled_within_groups(y, groups, s) for s in SHUFFLE_SEEDS]


def naive_logistic(feats, depth_indices, fit_predict):
    """Refit from scratch per fold for every depth and label vector (True + 5 shuffled, Pure)."""
    accs = []
    for di in depth_indices:
        for pos, neg, shuffled in (("memorised", "paraphrase_c", True), ("paraphrase_c", "paraphrase_b", False)):
            X, y, g = feats.task(di, pos, neg)
            for yy in (label_vectors(y, g) if shuffled else [y]):
                pred = np.empty(len(yy))
                for k in np.unique(g):
                    test = g == k
                    pred[test] = fit_predict(X[~test], yy[~test], X[test])
                accs.append(per_group_accuracy(pred == yy, g).mean())
    return accs


def logistic_fp(Xtr, ytr, Xte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(Xtr, ytr).predict(Xte)


def main():
    handle = repedit.load("smollm2-135m")
    pool, _ = screened(handle, load_pool("natural"))
    t0 = time.perf_counter()
    feats = pool_features(handle, pool, progress=False)
    t1 = time.perf_counter()
    curve, _ = depth_curve(feats, shuffle_seeds=SHUFFLE_SEEDS)
    t2 = time.perf_counter()
    twin = random_init_twin(handle)
    rfeats = pool_features(twin, pool, progress=False)
    depth_curve(rfeats)
    t3 = time.perf_counter()
    n_depths = len(feats.depths)
    print(f"full signature on {handle.id}: {len(pool)} keys x 3 x {feats.n_views} contexts, {n_depths} depths, "
          f"{feats.n_tokens} tokens")
    print(f"  capture {t1 - t0:.1f}s  probes+shuffled {t2 - t1:.2f}s  random-init control {t3 - t2:.1f}s  "
          f"total {t3 - t0:.1f}s")

    # same estimator, every depth: closed form vs sklearn Ridge refit per fold (features z-scored once)
    t = time.perf_counter()
    fast_curve, fast_shuf = depth_curve(feats, shuffle_seeds=SHUFFLE_SEEDS)
    fast = time.perf_counter() - t
    t = time.perf_counter()
    ridge_accs = naive_standardised(feats, range(n_depths))
    slow = time.perf_counter() - t
    got = np.array(ridge_accs).reshape(n_depths, 7)
    want = np.c_[fast_curve.true_loo, fast_shuf.T, fast_curve.pure_loo]
    diff = np.abs(got - want).max()
    assert diff < 0.01, f"closed form and naive refit disagree by {diff}"
    print(f"ridge LOO, all {n_depths} depths x (True + 5 shuffled + Pure): closed form {fast:.2f}s, "
          f"sklearn Ridge per fold {slow:.1f}s -> {slow / fast:.0f}x (max accuracy difference {diff:.4f})")

    sub = [0, n_depths // 2, n_depths - 1]
    t = time.perf_counter()
    naive_logistic(feats, sub, logistic_fp)
    per_depth = (time.perf_counter() - t) / len(sub)
    print(f"reference StandardScaler+LogisticRegression per fold: {per_depth:.1f}s per depth (timed on depths {sub}),"
          f" ~{per_depth * n_depths:.0f}s for all depths (extrapolated) -> {per_depth * n_depths / fast:.0f}x")


def naive_standardised(feats, depth_indices):
    """sklearn Ridge per fold on features z-scored with all rows, exactly as the closed form sees them."""
    accs = []
    for di in depth_indices:
        for pos, neg, shuffled in (("memorised", "paraphrase_c", True), ("paraphrase_c", "paraphrase_b", False)):
            X, y, g = feats.task(di, pos, neg)
            X = standardise(X)
            for yy in (label_vectors(y, g) if shuffled else [y]):
                pred = naive_ridge_group_loo(X, 2.0 * yy - 1, g, alpha=ALPHA)
                accs.append(per_group_accuracy(correct(pred, yy == 1), g).mean())
    return accs


if __name__ == "__main__":
    main()
