"""MRP — metamorphosis representation projection (2025), continual form.

Per task, learn k directions W [k, d] at one layer's residual output; the hook applies
h ← h − h QQᵀ with Q [d, K] an orthonormal basis of [W_prev; W]ᵀ (QR). Only W trains:
    L = −CE(forget answers) + retain_weight · CE(retain answers)
W is initialised from the top eigenvectors of the forget-minus-retain second moment of that
layer's last-token residuals (not noise), made orthogonal to earlier tasks' directions. Earlier
tasks' directions stay fixed; each new task appends k rows. The hook form is `ProbeProjection`
(μ = 0, s = 1); its folded weight form is `repedit.edits.fold.fold_projection` (a different edit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..capture import capture
from ..errors import ConfigError, InputError
from ..models.handle import pad_rows
from ..sites import Point, Site
from ..suites import Fact
from ..verify.recall import answer_ids, prompt_ids, span_logprobs
from .pga import ProbeProjection


@dataclass(frozen=True)
class MRPConfig:
    layer: int = 10                #: residual output of this layer is projected (depth = layer + 1)
    k: int = 2                     #: directions per task
    steps: int = 30
    lr: float = 5e-2
    retain_weight: float = 1.2
    form: str = "blank"            #: the fact form whose answers are trained on

    def __post_init__(self) -> None:
        if self.k < 1 or self.steps < 1 or self.lr <= 0 or self.retain_weight < 0:
            raise ConfigError("MRPConfig needs k >= 1, steps >= 1, lr > 0, retain_weight >= 0")


def _batch(handle, facts: Sequence[Fact], form: str):
    specs = [f.forms[form] for f in facts]
    prompts = [prompt_ids(handle, s["prompt"], s["chat"]) for s in specs]
    answers = [answer_ids(handle, f.answer, s["chat"]) for f, s in zip(facts, specs)]
    return pad_rows([p + a for p, a in zip(prompts, answers)], handle.pad_id), prompts, answers


def _ce(handle, batch, prompts, answers) -> torch.Tensor:
    """Mean answer cross-entropy (differentiable)."""
    logits = handle.forward(batch["input_ids"], batch["attention_mask"])
    return -span_logprobs(logits, prompts, answers).mean()


class MRP:
    """Continual MRP on one model and layer: `task(forget, retain)` learns k new directions."""

    def __init__(self, handle, config: MRPConfig | None = None):
        self.handle = handle
        self.config = config or MRPConfig()
        handle.check_layer(self.config.layer)
        self.W = torch.zeros(0, handle.d_model)
        self.log: list[dict] = []

    def _init(self, forget: Sequence[Fact], retain: Sequence[Fact]) -> torch.Tensor:
        site = Site(self.config.layer, "resid_post")
        prompts = lambda fs: [f.forms[self.config.form]["prompt"] for f in fs]  # noqa: E731
        hf = capture(self.handle, prompts(forget), [site], progress=False)[site].double()
        hr = capture(self.handle, prompts(retain), [site], progress=False)[site].double()
        diff = hf.T @ hf / len(hf) - hr.T @ hr / len(hr)
        if len(self.W):
            q = torch.linalg.qr(self.W.double().T)[0]
            P = torch.eye(diff.shape[0], dtype=diff.dtype) - q @ q.T
            diff = P @ diff @ P
        vals, vecs = torch.linalg.eigh(diff)
        return vecs[:, torch.argsort(vals, descending=True)[: self.config.k]].T.float()

    def projection(self, W: torch.Tensor | None = None) -> ProbeProjection:
        W = self.W if W is None else W
        q = torch.linalg.qr(W.T)[0]
        d = self.handle.d_model
        return ProbeProjection(self.config.layer + 1, torch.zeros(d), torch.ones(d), q, method="mrp")

    def task(self, forget: Sequence[Fact], retain: Sequence[Fact]) -> ProbeProjection:
        """Learn k directions for this task (earlier ones fixed); returns the projection of all so far."""
        if not forget or not retain:
            raise InputError("MRP.task needs forget and retain facts")
        from ..backends.torch_hooks import installed

        cfg, h = self.config, self.handle
        t0 = time.perf_counter()
        new = torch.nn.Parameter(self._init(forget, retain))
        opt = torch.optim.Adam([new], lr=cfg.lr)
        forget_batch = _batch(h, forget, cfg.form)
        retain_batch = _batch(h, retain, cfg.form)
        frozen = [p for p in h.model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            for _ in range(cfg.steps):
                q = torch.linalg.qr(torch.cat([self.W, new]).T)[0]
                with installed(h, {(cfg.layer, Point.RESID_POST): lambda x, q=q: x - (x @ q) @ q.T}):
                    loss = -_ce(h, *forget_batch) + cfg.retain_weight * _ce(h, *retain_batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        self.W = torch.cat([self.W, new.detach()])
        self.log.append({"task": len(self.log), "k_total": len(self.W), "final_loss": float(loss.detach()),
                         "seconds": round(time.perf_counter() - t0, 2)})
        return self.projection()
