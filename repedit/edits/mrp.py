"""MRP — metamorphosis representation projection (2025), continual form.

Per task, learn k directions W [k, d] at one layer's residual output; the hook applies
h ← h − h QQᵀ with Q [d, K] an orthonormal basis of [W_prev; W]ᵀ (QR). Only W trains:
    L = −mean_forget min(CE_i, forget_cap) + retain_weight · CE(retain answers)
CE_i is fact i's mean answer-token cross-entropy. The source's −CE is unbounded: measured here it
drives the forget answers to 1e-4 while other capitals fall from 0.23 to 0.05 (the directions
keep growing along whatever lowers any answer). Capping each forget term at `forget_cap` nats
(default 6: answer probability ≈ 0.0025) stops its gradient once a fact is forgotten, so the
retain term keeps the rest; this choice is ours.
W is initialised from the forget-minus-retain difference of that layer's last-token residuals,
D = Δμ Δμᵀ + Σ_forget − Σ_retain (centred; the uncentred second moment's top eigenvector is the shared
mean direction, and removing it took retain CE from 0.6 to 9.6 nats), restricted to the complement
of earlier tasks' directions: init="difference" takes D's top eigenvectors (the source's idea);
init="generalised" takes the top generalised eigenvectors of (D, S + ridge), S the second moment of
the residual over clean text — directions where forget and retain differ *relative to how much all
text uses them*. Measured (writers placement, first task): the difference init starts at forget /
retain CE 6.4 / 6.7 nats (everything destroyed; no edit: 1.30 / 1.14), the generalised init at
1.30 / 1.15, so training only has to add forgetting. Earlier tasks' directions stay fixed; each new
task appends k rows.

Two placements (`where`). "residual" is the source's: the projection hooks one layer's residual
output; its weight form (`fold_projection`) projects every residual writer up to that layer instead,
a different edit — measured here it is a much harsher one (bench/mrp_continual.json). "writers"
trains the directions in exactly that folded placement (hooks on the embedding and on every
attention and MLP output up to `layer`), so `MRP.edit()` is the trained edit, in plain weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from repedit.edits.base import Edit
from repedit.edits.fold import fold_projection
from repedit.edits.pga import ProbeProjection
from repedit.errors import ConfigError, InputError
from repedit.fit.training import training_only
from repedit.forward.capture import capture
from repedit.forward.packed import answer_scorer
from repedit.models.presets import resolve_config
from repedit.sites import Point, Site
from repedit.suites import Fact


@dataclass(frozen=True)
class MRPConfig:
    PRESET_SECTION: ClassVar[str] = "mrp"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layer",)

    layer: int | None = None       #: residual output of this layer is projected (depth = layer + 1); None: preset
    k: int = 2                     #: directions per task
    steps: int = 20
    lr: float = 5e-2
    retain_weight: float = 1.2
    forget_cap: float = 6.0        #: per-fact forget CE (nats/token) beyond which it stops pushing
    forms: tuple[str, ...] = ("blank", "qa", "adversarial")   #: forms trained on (paraphrase held out)
    where: str = "writers"         #: "writers" (trained in the folded = exported form) | "residual" (source hook)
    init: str = "generalised"      #: "generalised" (relative to general text; default) | "difference" (top eigvecs)
    init_ridge: float = 1e-2       #: "generalised": ridge on the text second moment, × its mean eigenvalue

    def __post_init__(self) -> None:
        if self.k < 1 or self.steps < 1 or self.lr <= 0 or self.retain_weight < 0 or self.forget_cap <= 0:
            raise ConfigError("MRPConfig needs k >= 1, steps >= 1, lr > 0, retain_weight >= 0, forget_cap > 0")
        if self.where not in ("residual", "writers"):
            raise ConfigError(f"where must be 'residual' or 'writers', got {self.where!r}")
        if self.init not in ("difference", "generalised") or self.init_ridge <= 0:
            raise ConfigError(f"init must be 'difference' or 'generalised' (init_ridge > 0), got {self.init!r}")
        if not self.forms or "mc" in self.forms:
            raise ConfigError("forms must be free-text fact forms (blank, qa, paraphrase, adversarial), "
                              f"got {self.forms}")


class MRP:
    """Continual MRP on one model and layer: `task(forget, retain)` learns k new directions."""

    def __init__(self, handle, config: MRPConfig | None = None):
        self.handle = handle
        self.config = resolve_config(config or MRPConfig(), handle)   # None fields from the model's preset
        handle.check_layer(self.config.layer)
        self.W = torch.zeros(0, handle.d_model, device=handle.device, dtype=torch.float32)   # float32, model's device
        self.log: list[dict] = []

    def _init(self, forget: Sequence[Fact], retain: Sequence[Fact]) -> torch.Tensor:
        site = Site(self.config.layer, "resid_post")
        prompts = lambda fs: [f.forms[form]["prompt"] for form in self.config.forms for f in fs]  # noqa: E731
        hf = capture(self.handle, prompts(forget), [site], progress=False)[site].double()
        hr = capture(self.handle, prompts(retain), [site], progress=False)[site].double()
        dmu = hf.mean(0) - hr.mean(0)
        cov = lambda x: (x - x.mean(0)).T @ (x - x.mean(0)) / max(len(x) - 1, 1)  # noqa: E731
        diff = torch.outer(dmu, dmu) + cov(hf) - cov(hr)
        if len(self.W):
            q = torch.linalg.qr(self.W.to(diff.device, torch.float64).T)[0]
            P = torch.eye(diff.shape[0], dtype=diff.dtype, device=diff.device) - q @ q.T
            diff = P @ diff @ P
        if self.config.init == "difference":
            vals, vecs = torch.linalg.eigh(diff)
            return vecs[:, torch.argsort(vals, descending=True)[: self.config.k]].T.float()
        # generalised: maximise vᵀ diff v / vᵀ S v, S = general text's second moment (+ ridge)
        S = self._text_moment().to(diff.device, diff.dtype)
        S = S + self.config.init_ridge * torch.trace(S) / S.shape[0] * torch.eye(S.shape[0], dtype=S.dtype,
                                                                                  device=S.device)
        Li = torch.linalg.inv(torch.linalg.cholesky(S))
        vals, vecs = torch.linalg.eigh(Li @ diff @ Li.T)
        V = Li.T @ vecs[:, torch.argsort(vals, descending=True)[: self.config.k]]
        return (V / V.norm(dim=0)).T.float()

    def _text_moment(self) -> torch.Tensor:
        """Uncentred second moment [d, d] of the layer's residual output over clean wiki text (cached)."""
        if getattr(self, "_S", None) is None:
            from repedit.suites import load_text

            site = Site(self.config.layer, "resid_post", None)
            got = capture(self.handle, [t[:400] for t in load_text("wiki", "train")[:40]], [site], progress=False)
            X = torch.cat([x[1:] for x in got[site]]).double()          # position 0 (the sink) left out
            self._S = X.T @ X / len(X)
        return self._S

    def sites(self, fn) -> dict:
        """Where the projection acts: the residual output of `layer` ("residual", the source's
        hook), or the output of every residual writer up to `layer` ("writers", the folded form)."""
        if self.config.where == "residual":
            return {(self.config.layer, Point.RESID_POST): fn}
        writers = {(0, Point.RESID_PRE): fn}
        for layer in range(self.config.layer + 1):
            writers |= {(layer, Point.ATTN_OUT): fn, (layer, Point.MLP_OUT): fn}
        return writers

    def active(self, handle=None):
        """Context manager running the model with the learned projection where it was trained."""
        from repedit.backends.torch_hooks import installed

        q = self.projection().U
        return installed(handle or self.handle, self.sites(lambda x: _project(x, q)))

    def edit(self) -> Edit:
        """The weight form (`fold_projection`); exact for where="writers", a different edit otherwise."""
        return fold_projection(self.handle, self.projection(), self.config)

    def projection(self, W: torch.Tensor | None = None) -> ProbeProjection:
        W = self.W if W is None else W
        q = torch.linalg.qr(W.float().T)[0]
        d = self.handle.d_model
        return ProbeProjection(self.config.layer + 1, torch.zeros(d, device=q.device), torch.ones(d, device=q.device),
                               q, method="mrp")

    def task(self, forget: Sequence[Fact], retain: Sequence[Fact]) -> ProbeProjection:
        """Learn k directions for this task (earlier ones fixed); returns the projection of all so far
        (its basis U; run the model as trained with `mrp.active()`, get the weights with `mrp.edit()`)."""
        if not forget or not retain:
            raise InputError("MRP.task needs forget and retain facts")
        from repedit.backends.torch_hooks import installed

        cfg, h = self.config, self.handle
        t0 = time.perf_counter()
        new = torch.nn.Parameter(self._init(forget, retain).to(self.W.device, torch.float32))   # float32 leaf
        opt = torch.optim.Adam([new], lr=cfg.lr)
        score = answer_scorer(h, forget, retain, cfg.forms)
        curve = []
        with training_only(h):
            for _ in range(cfg.steps):
                q = torch.linalg.qr(torch.cat([self.W, new]).T)[0]
                with installed(h, self.sites(lambda x, q=q: _project(x, q))):
                    lp_f, lp_r = score()
                    ce_f, ce_r = -lp_f, -lp_r
                loss = -ce_f.clamp(max=cfg.forget_cap).mean() + cfg.retain_weight * ce_r.mean()
                curve.append((float(ce_f.detach().mean()), float(ce_r.detach().mean())))
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.W = torch.cat([self.W, new.detach()])
        self.log.append({"task": len(self.log), "k_total": len(self.W), "final_loss": float(loss.detach()),
                         "forget_ce_first_last": [round(curve[0][0], 3), round(curve[-1][0], 3)],
                         "retain_ce_first_last": [round(curve[0][1], 3), round(curve[-1][1], 3)],
                         "seconds": round(time.perf_counter() - t0, 2)})
        return self.projection()


def _project(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """x − x Q Qᵀ (Q [d, K] orthonormal columns), computed in float32 on x's device and cast once to x's dtype."""
    xf, q = x.float(), q.to(x.device, torch.float32)
    return (xf - (xf @ q) @ q.T).to(x.dtype)
