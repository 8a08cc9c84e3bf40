"""The memorisation signature: leave-one-key-out cross-sequence probes at every depth.

True-LOO(d): a probe separates memorised M from paraphrase C, trained on all keys but one and
tested on the held-out key. Pure-LOO(d): the same for the two paraphrases C vs B. The
memorisation-specific gap(d) = True − Pure. Controls: labels shuffled within each key (several
seeds; should sit at chance) and the same architecture with random weights (gap ≈ 0).

Probe: ridge classifier on z-scored features (statistics of all rows of the task, label-free),
unpenalised intercept, exact closed-form leave-one-key-out (`loo.ridge_group_loo`).
Confidence intervals: 95% Student-t over keys.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from repedit.errors import InputError
from repedit.fit.group_loo import (
    correct,
    per_group_accuracy,
    ridge_group_loo,
    shuffled_within_groups,
    standardise,
)
from repedit.fit.pool_features import PoolFeatures, pool_features
from repedit.suites.pools import Pool

ALPHA = 100.0   # ridge penalty in z-scored space; chosen on SmolLM2-135M (probes/memorised/README.md)


def t_interval(per_key: np.ndarray) -> tuple[float, float]:
    """95% Student-t interval of the mean over keys (axis 0)."""
    from scipy import stats

    k = per_key.shape[0]
    half = stats.t.ppf(0.975, k - 1) * per_key.std(0, ddof=1) / math.sqrt(k)
    m = per_key.mean(0)
    return float(m - half), float(m + half)


@dataclass(frozen=True)
class DepthCurve:
    """Per-depth LOO accuracies and gap, each with a 95% interval over keys."""

    true_loo: list[float]
    pure_loo: list[float]
    gap: list[float]
    true_ci: list[tuple[float, float]]
    pure_ci: list[tuple[float, float]]
    gap_ci: list[tuple[float, float]]
    true_per_key: list[list[float]]        # [depth][key]
    pure_per_key: list[list[float]]


@dataclass(frozen=True)
class SignatureResult:
    """Everything the signature measured; `to_json`/`from_json` round-trip, `plot` draws it."""

    model: str
    pool: str
    keys: list[str]
    depths: list[int]
    n_views: int
    alpha: float
    curve: DepthCurve
    shuffled_true_loo: list[list[float]]   # [seed][depth]
    random_init: DepthCurve | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def peak_index(self) -> int:
        return int(np.argmax(self.curve.gap))

    @property
    def peak_depth(self) -> int:
        return self.depths[self.peak_index]

    @property
    def peak_gap(self) -> float:
        return self.curve.gap[self.peak_index]

    @property
    def shuffled_mean(self) -> list[float]:
        return np.mean(self.shuffled_true_loo, axis=0).tolist()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = {"peak_depth": self.peak_depth, "peak_gap": self.peak_gap,
                        "peak_true_loo": self.curve.true_loo[self.peak_index],
                        "peak_pure_loo": self.curve.pure_loo[self.peak_index],
                        "shuffled_mean": float(np.mean(self.shuffled_true_loo)),
                        "random_init_max_abs_gap": (float(np.max(np.abs(self.random_init.gap)))
                                                    if self.random_init else None)}
        return d

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> SignatureResult:
        d = json.loads(Path(path).read_text())
        d.pop("summary", None)
        d["curve"] = _curve_from(d["curve"])
        d["random_init"] = _curve_from(d["random_init"]) if d["random_init"] else None
        return cls(**d)

    def table(self) -> str:
        head = f"{'depth':>5} {'True':>6} {'Pure':>6} {'gap':>6} {'gap 95% CI':>16} {'shuf':>6}"
        if self.random_init:
            head += f" {'rnd gap':>8}"
        lines = [head]
        shuf = self.shuffled_mean
        for i, dpt in enumerate(self.depths):
            c = self.curve
            lo, hi = c.gap_ci[i]
            line = (f"{dpt:>5} {c.true_loo[i]:6.3f} {c.pure_loo[i]:6.3f} {c.gap[i]:+6.3f} "
                    f"[{lo:+6.3f},{hi:+6.3f}] {shuf[i]:6.3f}")
            if self.random_init:
                line += f" {self.random_init.gap[i]:+8.3f}"
            lines.append(line + ("  <- peak" if i == self.peak_index else ""))
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        from repedit.plots import signature_plot

        return signature_plot(self, path)


def _curve_from(d: dict) -> DepthCurve:
    for k in ("true_ci", "pure_ci", "gap_ci"):
        d[k] = [tuple(x) for x in d[k]]
    return DepthCurve(**d)


def loo_accuracy(feats: PoolFeatures, pos: str, neg: str, *, alpha: float = ALPHA,
                 shuffle_seeds: Sequence[int] = ()) -> np.ndarray:
    """Per-key LOO accuracy of the ridge probe: [n_depths, n_keys, 1 + len(shuffle_seeds)].

    Column 0 uses the true labels; column 1+s labels permuted within each key with seed s.
    """
    out = []
    for di in range(len(feats.depths)):
        X, y, groups = feats.task(di, pos, neg)
        Y = np.stack([y] + [shuffled_within_groups(y, groups, s) for s in shuffle_seeds], axis=1)
        pred = ridge_group_loo(standardise(X), 2.0 * Y - 1.0, groups, alpha=alpha)
        out.append(per_group_accuracy(correct(pred, Y == 1), groups))
    return np.stack(out)


def depth_curve(feats: PoolFeatures, *, alpha: float = ALPHA, shuffle_seeds: Sequence[int] = ()
                ) -> tuple[DepthCurve, np.ndarray]:
    """True/Pure/gap curve over depths, and the shuffled-label True-LOO [seed, depth]."""
    true = loo_accuracy(feats, "memorised", "paraphrase_c", alpha=alpha, shuffle_seeds=shuffle_seeds)
    pure = loo_accuracy(feats, "paraphrase_c", "paraphrase_b", alpha=alpha)[..., 0]
    t, p = true[..., 0], pure
    gap = t - p
    curve = DepthCurve(
        true_loo=t.mean(1).tolist(), pure_loo=p.mean(1).tolist(), gap=gap.mean(1).tolist(),
        true_ci=[t_interval(r) for r in t], pure_ci=[t_interval(r) for r in p],
        gap_ci=[t_interval(r) for r in gap],
        true_per_key=t.tolist(), pure_per_key=p.tolist())
    shuffled = true[..., 1:].mean(1).T                                 # [seed, depth]
    return curve, shuffled


def signature(handle, pool: Pool, *, contexts: Sequence[str] | Sequence[int] | None = None,
              depths: Sequence[int] | None = None, alpha: float = ALPHA, shuffle_seeds: Sequence[int] = range(5),
              random_init: bool = True, random_seed: int = 0, writes=None, batch_size: int = 16,
              progress: bool = True) -> SignatureResult:
    """The memorisation signature of `handle` on `pool` (screen natural pools first: `fit.pool_screen.screened`).

    random_init=True repeats the measurement on the same architecture with random weights.
    `writes` passes hook-form edits through to the capture.
    """
    if not isinstance(pool, Pool):
        raise InputError("signature() takes a Pool (repedit.suites.pools.load_pool / toy_pool)")
    if len(list(shuffle_seeds)) == 0:
        raise InputError("give at least one shuffle seed for the shuffled-label control")
    t0 = time.perf_counter()
    feats = pool_features(handle, pool, contexts=contexts, depths=depths, writes=writes,
                          batch_size=batch_size, progress=progress)
    t1 = time.perf_counter()
    curve, shuffled = depth_curve(feats, alpha=alpha, shuffle_seeds=list(shuffle_seeds))
    t2 = time.perf_counter()
    rnd = None
    if random_init:
        from repedit.verify.controls import random_init_twin

        twin = random_init_twin(handle, seed=random_seed)
        rfeats = pool_features(twin, pool, contexts=contexts, depths=depths, batch_size=batch_size,
                               progress=progress)
        rnd, _ = depth_curve(rfeats, alpha=alpha)
    t3 = time.perf_counter()
    return SignatureResult(
        model=handle.id, pool=pool.name, keys=list(feats.keys), depths=list(feats.depths),
        n_views=feats.n_views, alpha=alpha, curve=curve, shuffled_true_loo=shuffled.tolist(),
        random_init=rnd,
        seconds={"capture": round(t1 - t0, 2), "probes": round(t2 - t1, 3),
                 "random_init": round(t3 - t2, 2), "total": round(t3 - t0, 2), "tokens": feats.n_tokens})
