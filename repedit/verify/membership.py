"""Membership inference on token rows: the four classic scores, their AUCs and MUSE's PrivLeak.

Every score is oriented so that higher = more likely a member (seen in training):

- `loss`: −mean NLL of the tokens after the first (Yeom et al. 2018).
- `zlib`: −(sum NLL) / zlib-compressed length in bytes of the text (Carlini et al. 2021); the text is
  the decoded row, or the raw bytes of the tokens for byte-vocabulary toys.
- `min_k`: mean of the lowest k fraction of token log-probs (Min-K% Prob, Shi et al. 2024).
- `min_k_pp`: Min-K%++ (Zhang et al. 2024): per position (log p(x_t) − μ_t) / σ_t with μ_t, σ_t the
  mean and std of log p(z) over the full next-token distribution, then the mean of the lowest k.

PrivLeak (MUSE): (AUC − AUC_ref) / AUC_ref × 100 per score, AUC_ref being a retrained (never-saw-the-
forget-set) model's AUC on the same items; 0.5 when none is given. Near 0 is ideal; positive =
forget items still look like members, negative = over-unlearned.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repedit.errors import InputError
from repedit.forward.text import prompt_ids
from repedit.verify.benchmarks.text import auc, min_k, row_logprobs

__all__ = ["SCORES", "MembershipResult", "auc", "fact_rows", "membership_attack", "membership_scores"]

SCORES = ("loss", "zlib", "min_k", "min_k_pp")


def _text_bytes(handle, row: list[int]) -> bytes:
    if handle.is_toy:                                  # byte vocabulary: the tokens are the bytes
        return bytes(int(t) for t in row)
    return handle.tokenizer.decode(row).encode("utf-8")


def membership_scores(handle, rows: Sequence[list[int]], *, k: float = 0.2,
                      batch_size: int = 16) -> dict[str, np.ndarray]:
    """The four membership scores of each token row ({score: [n_rows]}, higher = member)."""
    if not 0 < k <= 1:
        raise InputError(f"k is the fraction of lowest tokens kept, in (0, 1]; got {k}")
    rows = [[int(t) for t in r] for r in rows]
    if not rows or any(len(r) < 2 for r in rows):
        raise InputError("membership_scores needs a non-empty list of rows of at least 2 tokens")
    out: dict[str, list[float]] = {s: [] for s in SCORES}
    for row, (lp, mu, sigma) in zip(rows, row_logprobs(handle, rows, batch_size, moments=True)):
        out["loss"].append(float(lp.mean()))
        out["zlib"].append(float(lp.sum()) / len(zlib.compress(_text_bytes(handle, row))))
        out["min_k"].append(min_k(lp, k))
        out["min_k_pp"].append(min_k((lp - mu) / sigma, k))
    return {s: np.array(v, dtype=np.float64) for s, v in out.items()}


@dataclass(frozen=True)
class MembershipResult:
    """AUC of each score telling forget (members) from retain (non-members) items, and PrivLeak."""

    auc: dict[str, float]
    privleak: dict[str, float]
    reference_auc: dict[str, float]
    reference: str              # "given" or "none (0.5)"
    k: float
    n_forget: int
    n_retain: int

    def to_dict(self) -> dict:
        return {"auc": dict(self.auc), "privleak": dict(self.privleak), "reference_auc": dict(self.reference_auc),
                "reference": self.reference, "k": self.k, "n_forget": self.n_forget, "n_retain": self.n_retain}


def membership_attack(handle, forget_rows: Sequence[list[int]], retain_rows: Sequence[list[int]], *,
                      reference: dict[str, float] | None = None, k: float = 0.2) -> MembershipResult:
    """Membership AUC of forget (members) vs retain (non-members) rows per score, and MUSE's PrivLeak
    against `reference` (the `to_dict()["auc"]` of a retrained model on the same rows; default 0.5)."""
    if reference is not None:
        missing = [s for s in SCORES if not 0 < float(reference.get(s, 0.0)) <= 1]
        if missing:
            raise InputError(f"reference must map every score {SCORES} to an AUC in (0, 1]; bad: {missing}")
    ref = {s: float(reference[s]) if reference is not None else 0.5 for s in SCORES}
    f = membership_scores(handle, forget_rows, k=k)
    r = membership_scores(handle, retain_rows, k=k)
    aucs = {s: auc(f[s], r[s]) for s in SCORES}
    return MembershipResult(
        auc=aucs, privleak={s: (aucs[s] - ref[s]) / ref[s] * 100 for s in SCORES}, reference_auc=ref,
        reference="given" if reference is not None else "none (0.5)", k=k,
        n_forget=len(forget_rows), n_retain=len(retain_rows))


def fact_rows(handle, facts) -> list[list[int]]:
    """Token rows of each Fact as text: its blank-form prompt, a space, its answer."""
    return [prompt_ids(handle, f"{f.forms['blank']['prompt']} {f.answer}", False) for f in facts]
