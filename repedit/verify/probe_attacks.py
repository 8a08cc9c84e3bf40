"""Probe attackers later edits are judged by: six probe variants and a re-fit attacker.

Both measure leave-one-key-out accuracy of memorised-vs-paraphrase (M vs C) probes on the
activations of any model (edited or not; hook-form edits via `writes`), at chosen depths.
Features are z-scored with label-free statistics of the task's rows, as in the signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from repedit.errors import InputError
from repedit.fit.group_loo import logistic_group_loo, mlp_group_loo, proba_accuracy, standardise, zscore_stats
from repedit.fit.pool_features import PoolFeatures, pool_features
from repedit.suites.pools import Pool


@dataclass(frozen=True)
class ProbeVariant:
    """One attacker probe. For logistic probes the seed is inert (lbfgs on a convex loss is
    deterministic); it is kept so the variant list matches the source's."""

    name: str
    kind: str                          # "logistic" | "mlp"
    C: float = 1.0
    hidden: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "mlp"):
            raise InputError(f"ProbeVariant.kind must be 'logistic' or 'mlp', got {self.kind!r}")
        if self.kind == "mlp" and not self.hidden:
            raise InputError("an MLP probe needs hidden layer sizes, e.g. hidden=(16,)")
        if self.C <= 0:
            raise InputError(f"C must be positive, got {self.C}")

    def loo_proba(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
        if self.kind == "logistic":
            return logistic_group_loo(X, y, groups, C=self.C, seed=self.seed)
        return mlp_group_loo(X, y, groups, hidden=self.hidden, seed=self.seed)


#: The six variants of the probe-geometry-alignment evaluation (METHODS.md).
PROBE_VARIANTS: tuple[ProbeVariant, ...] = (
    ProbeVariant("lr-seed42-C1", "logistic", C=1.0, seed=42),
    ProbeVariant("lr-seed7-C1", "logistic", C=1.0, seed=7),
    ProbeVariant("lr-seed13-C0.1", "logistic", C=0.1, seed=13),
    ProbeVariant("lr-seed99-C10", "logistic", C=10.0, seed=99),
    ProbeVariant("mlp16", "mlp", hidden=(16,), seed=0),
    ProbeVariant("mlp32-16", "mlp", hidden=(32, 16), seed=0),
)


@dataclass(frozen=True)
class AttackResult:
    """accuracy[variant][depth] (mean over held-out keys) for M vs C probes."""

    model: str
    pool: str
    depths: list[int]
    variants: list[str]
    accuracy: list[list[float]]
    transfer: list[float] | None = None    # re-fit attacker only: the original model's probe, applied

    @property
    def best(self) -> float:
        """The strongest attacker's accuracy at its best depth."""
        return float(np.max(self.accuracy))

    def to_dict(self) -> dict:
        return asdict(self) | {"best": self.best}

    def table(self) -> str:
        lines = [f"{'variant':>16} " + " ".join(f"d{d:>5}" for d in self.depths)]
        for v, row in zip(self.variants, self.accuracy):
            lines.append(f"{v:>16} " + " ".join(f"{a:6.3f}" for a in row))
        if self.transfer is not None:
            lines.append(f"{'orig. probe':>16} " + " ".join(f"{a:6.3f}" for a in self.transfer))
        return "\n".join(lines)


def _features(model_or_features, pool: Pool | None, depths: Sequence[int], **kw) -> PoolFeatures:
    if isinstance(model_or_features, PoolFeatures):
        missing = set(depths) - set(model_or_features.depths)
        if missing:
            raise InputError(f"features lack depths {sorted(missing)}; capture them or pick from "
                             f"{list(model_or_features.depths)}")
        return model_or_features
    if pool is None:
        raise InputError("pass a Pool with a model (or precomputed PoolFeatures)")
    return pool_features(model_or_features, pool, depths=depths, **kw)


def _accuracy(feats: PoolFeatures, depth: int, variant: ProbeVariant) -> float:
    X, y, groups = feats.task(feats.depths.index(depth), "memorised", "paraphrase_c")
    return proba_accuracy(variant.loo_proba(standardise(X), y, groups), y, groups)


def probe_variants_attack(model_or_features, pool: Pool | None = None, *, depths: Sequence[int],
                          variants: Sequence[ProbeVariant] = PROBE_VARIANTS, **capture_kw) -> AttackResult:
    """Leave-one-key-out M-vs-C accuracy of every probe variant at each depth."""
    depths = list(depths)
    if not depths:
        raise InputError("give at least one depth to attack, e.g. the signature's peak depth")
    feats = _features(model_or_features, pool, depths, **capture_kw)
    acc = [[_accuracy(feats, d, v) for d in depths] for v in variants]
    return AttackResult(model=feats.model, pool=feats.pool, depths=depths, variants=[v.name for v in variants],
                        accuracy=acc)


def refit_attack(edited, pool: Pool | None = None, *, depths: Sequence[int], original=None,
                 C: float = 1.0, **capture_kw) -> AttackResult:
    """A fresh logistic probe trained (leave-one-key-out) on the edited model's activations.

    With `original` (a model or its PoolFeatures), also reports `transfer`: a probe fitted on
    all keys of the original model, applied unchanged to the edited model's activations.
    """
    from sklearn.linear_model import LogisticRegression

    depths = list(depths)
    if not depths:
        raise InputError("give at least one depth to attack")
    feats = _features(edited, pool, depths, **capture_kw)
    fresh = ProbeVariant("refit-lr", "logistic", C=C)
    acc = [[_accuracy(feats, d, fresh) for d in depths]]
    transfer = None
    if original is not None:
        ofeats = _features(original, pool, depths, **capture_kw)
        if ofeats.keys != feats.keys:
            raise InputError("original and edited features must come from the same pool keys")
        transfer = []
        for d in depths:
            Xo, yo, _ = ofeats.task(ofeats.depths.index(d), "memorised", "paraphrase_c")
            Xe, ye, _ = feats.task(feats.depths.index(d), "memorised", "paraphrase_c")
            mu, sd = zscore_stats(Xo)
            clf = LogisticRegression(C=C, max_iter=2000).fit((Xo - mu) / sd, yo)
            transfer.append(float((clf.predict((Xe - mu) / sd) == ye).mean()))
    return AttackResult(model=feats.model, pool=feats.pool, depths=depths, variants=[fresh.name],
                        accuracy=acc, transfer=transfer)
