"""LEACE baseline (Belrose et al. 2023, the `concept-erasure` package): closed-form linear erasure
of a label from the residual stream at one depth, in hook form and folded weight form.

LEACE's eraser is x ← x − L R (x − b) (L [d, k], R [k, d], b the mean): the least-squares change
after which no linear classifier beats a constant at predicting the label. Here it is a
`LinearErasure` at a depth with the same hook (`.active`) and the same weight form
(`repedit.edits.fold.fold_projection`: T = I − L R folded into every residual writer before the
depth; the offset is dropped, as for PGA) as repedit's PGA projections, so both are verified by
the same tools. Labels: memorised vs control texts of a probe pool (`leace_pool`, PGA's task), or
the last prompt token of forget vs retain facts (`leace_facts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from repedit.edits.rewrite import DepthRewrite
from repedit.errors import InputError
from repedit.suites import Fact


@dataclass(frozen=True)
class LinearErasure(DepthRewrite):
    """x ← x − left @ right @ (x − bias) at `depth`. left [d, k], right [k, d], bias [d]."""

    depth: int
    left: torch.Tensor
    right: torch.Tensor
    bias: torch.Tensor
    method: str = "leace"

    @property
    def k(self) -> int:
        return int(self.left.shape[1])

    def rewrite(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, d] → same; computed in float32 on x's device, cast once to x's dtype."""
        L, R, b = (t.to(x.device, torch.float32) for t in (self.left, self.right, self.bias))
        xf = x.float()
        return (xf - ((xf - b) @ R.T) @ L.T).to(x.dtype)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) [d, k] float64 with T = I − A Bᵀ (the fold's input)."""
        return self.left.double(), self.right.T.double()


def fit_leace(X, labels, depth: int, method: str = "leace") -> LinearErasure:
    """Fit the eraser on activations X [n, d] with integer labels [n] (≥ 2 classes) at `depth`."""
    from concept_erasure import LeaceFitter

    X = X.detach().cpu() if isinstance(X, torch.Tensor) else X      # fitted on the CPU in float64
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64, device="cpu")
    y = torch.as_tensor(np.asarray(labels), device="cpu").long()
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InputError(f"fit_leace() takes X [n, d] and labels [n]; got {tuple(X.shape)} and {tuple(y.shape)}")
    classes = torch.unique(y)
    if len(classes) < 2 or not torch.isfinite(X).all():
        raise InputError("fit_leace() needs finite activations of at least two label classes")
    z = (y[:, None] == classes[1:][None]).double() if len(classes) > 2 else (y == classes[1]).double()[:, None]
    fitter = LeaceFitter(X.shape[1], z.shape[1], method=method, dtype=torch.float64)
    fitter.update(X, z)
    e = fitter.eraser
    return LinearErasure(depth, e.proj_left.float(), e.proj_right.float(), e.bias.float(), method)


def leace_pool(handle_or_features, pool=None, *, depth: int, **capture_kw) -> LinearErasure:
    """Erase memorised-vs-control (PGA's task) at `depth`, from a pool's last-token features."""
    from repedit.fit.pool_features import PoolFeatures, pool_features

    feats = handle_or_features if isinstance(handle_or_features, PoolFeatures) else \
        pool_features(handle_or_features, pool, depths=[depth], progress=False, **capture_kw)
    if depth not in feats.depths:
        raise InputError(f"features lack depth {depth}; capture it (depths={list(feats.depths)})")
    X, y, _groups = feats.task(feats.depths.index(depth), "memorised", "paraphrase_c")
    return fit_leace(X, y, depth)


def leace_facts(handle, forget: Sequence[Fact], retain: Sequence[Fact], *, depth: int,
                forms: Sequence[str] = ("blank", "paraphrase", "adversarial")) -> LinearErasure:
    """Erase forget-vs-retain at the last prompt token of the facts' (non-chat) forms at `depth`."""
    from repedit.forward.capture import capture
    from repedit.sites import Site

    if not forget or not retain:
        raise InputError("leace_facts() needs forget and retain facts")
    if not 1 <= depth <= handle.n_layers:
        raise InputError(f"depth must lie in 1..{handle.n_layers} (output of layer depth−1), got {depth}")
    texts, labels = [], []
    for label, facts in ((1, forget), (0, retain)):
        for f in facts:
            for form in forms:
                spec = f.forms.get(form)
                if spec is None or spec.get("chat"):
                    raise InputError(f"{f.id}: form {form!r} is missing or chat-templated; use blank, paraphrase "
                                     "or adversarial")
                texts.append(spec["prompt"])
                labels.append(label)
    site = Site(depth - 1, "resid_post")
    got = capture(handle, texts, [site], progress=False)
    return fit_leace(got[site].double(), labels, depth)
