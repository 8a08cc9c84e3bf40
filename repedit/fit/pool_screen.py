"""Screening a memorisation pool on a model: keep the keys whose memorised text the model predicts well
and whose paraphrases it does not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from repedit.errors import InputError
from repedit.forward.text import continuation_logprobs
from repedit.suites.pools import CLASSES, Item, Pool, item_ids

# ----- screening ---------------------------------------------------------------------------------
#: Thresholds on mean log-prob per token, chosen on SmolLM2-135M (probes/memorised/README.md):
#: a key passes when M is above THETA_M and both paraphrases are below THETA_C (the values used
#: for Pythia-70M in the source). Scored after a SKIP-token cue: nothing predicts a text's opening.
THETA_M = -2.0


THETA_C = -3.0


SKIP = 4


@dataclass(frozen=True)
class ScreenRow:
    key: str
    memorised: float        # mean log-prob per token (first token excluded)
    paraphrase_c: float
    paraphrase_b: float
    passed: bool


@dataclass(frozen=True)
class ScreenReport:
    model: str
    pool: str
    theta_m: float
    theta_c: float
    skip: int
    rows: tuple[ScreenRow, ...]

    @property
    def passing(self) -> list[str]:
        return [r.key for r in self.rows if r.passed]

    def to_dict(self) -> dict:
        return {"model": self.model, "pool": self.pool, "theta_m": self.theta_m, "theta_c": self.theta_c,
                "skip": self.skip, "n_passing": len(self.passing), "rows": [asdict(r) for r in self.rows]}


def token_logprobs(handle, items: Sequence[Item], *, skip: int = 1, batch_size: int = 16) -> list[float]:
    """Mean log-prob per token of each item under the model, over tokens after the first `skip`."""
    if skip < 1:
        raise InputError(f"skip must be >= 1 (the first token has no context), got {skip}")
    rows = [item_ids(handle, it) for it in items]
    if any(len(r) <= skip for r in rows):
        raise InputError(f"every item needs more than skip={skip} tokens to score")
    return continuation_logprobs(handle, [r[:skip] for r in rows], [r[skip:] for r in rows], batch_size)


def screen(handle, pool: Pool, *, theta_m: float = THETA_M, theta_c: float = THETA_C,
           skip: int = SKIP) -> ScreenReport:
    """Log-prob per token of every item (after `skip` tokens); a key passes when M > theta_m and C, B < theta_c."""
    if not theta_c <= theta_m:
        raise InputError(f"theta_c ({theta_c}) must not exceed theta_m ({theta_m})")
    items = [k.item(c) for k in pool.keys for c in CLASSES]
    lp = token_logprobs(handle, items, skip=skip)
    rows = []
    for i, k in enumerate(pool.keys):
        m, c, b = lp[3 * i: 3 * i + 3]
        ok = math.isfinite(m) and m > theta_m and c < theta_c and b < theta_c
        rows.append(ScreenRow(k.key, round(m, 4), round(c, 4), round(b, 4), ok))
    return ScreenReport(model=handle.id, pool=pool.name, theta_m=theta_m, theta_c=theta_c, skip=skip,
                        rows=tuple(rows))


def screened(handle, pool: Pool, **thresholds) -> tuple[Pool, ScreenReport]:
    """The pool restricted to keys that pass screening on this model (error if fewer than 3)."""
    report = screen(handle, pool, **thresholds)
    if len(report.passing) < 3:
        raise InputError(f"only {len(report.passing)} keys of pool {pool.name!r} pass screening on "
                         f"{handle.id}; lower the thresholds or add keys ({report.to_dict()['rows']})")
    return pool.subset(report.passing), report
