"""RMU baseline (Li et al. 2024, WMDP): representation misdirection, as an `Edit` of dense deltas.

    L = mean ‖h_l(forget) − c·u‖² + α · mean ‖h_l(retain) − h_l^frozen(retain)‖²

h_l is the residual stream after block `layer` at every real token of the forget / retain texts
(position 0 — the attention sink, whose norm is orders of magnitude larger — is left out of both
terms); u is a fixed random unit vector; only the MLP output matrices of `update_layers` (default
layer−2..layer) train, with Adam. The forward stops after `layer`, so a step costs a fraction of a
full pass. Choices the source leaves to the model: c defaults to `coef_scale` × the mean forget
token norm at `layer` (the source's absolute 6.5–20 is tuned to Zephyr-7B's norms); forget texts are
the facts' prompts with their answers in `forms`; retain texts are retain facts (same forms) and
clean wiki chunks. Early stop once the forget answer probability, checked every `check_every` steps,
is ≤ `stop_at`: the run's forget measure when a `monitor` is given (recipe runs,
`repedit.baselines.tracking`), else the blank form. The model is left bit-identical.
On a bf16 / fp16 model the trained matrices are float32 masters (`repedit.fit.training.training_only`):
the returned change is float32 (master − original), and `stats['rounded_away']` is the largest share of
a matrix's change that the model's dtype cannot hold (what merging it into that model loses).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch

from repedit.baselines.gradient import param_names
from repedit.baselines.tracking import Monitor, Tracker
from repedit.edits.base import DenseDelta, Edit, config_record
from repedit.errors import ConfigError, InputError
from repedit.fit.training import training_only
from repedit.forward.passes import fact_batch, residual_after, start_at, text_batch
from repedit.models.presets import resolve_config
from repedit.suites import Fact, load_text


@dataclass(frozen=True)
class RMUConfig:
    PRESET_SECTION: ClassVar[str] = "rmu"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layer",)

    layer: int | None = None                 #: residual stream after this block is misdirected (None: preset)
    update_layers: tuple[int, ...] | None = None   #: None = layer−2 .. layer
    coef: float | None = None                #: c; None = coef_scale × mean forget token norm
    coef_scale: float = 3.0
    alpha: float = 100.0                     #: retain weight
    steps: int = 80                          #: forget 0.45 → 0.06 in 60 steps at lr 5e-4 (4 capitals)
    lr: float = 5e-4
    forms: tuple[str, ...] = ("blank", "adversarial")
    retain_texts: int = 8                    #: clean wiki chunks added to the retain set
    stop_at: float = 0.05
    check_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.layer is not None and self.layer < 0) or self.steps < 1 or self.lr <= 0 or self.alpha < 0 \
                or self.coef_scale <= 0:
            raise ConfigError("RMUConfig needs layer >= 0, steps >= 1, lr > 0, alpha >= 0, coef_scale > 0")
        if self.coef is not None and self.coef <= 0:
            raise ConfigError("RMUConfig.coef must be > 0 (or None for coef_scale × the forget norm)")
        if self.update_layers is not None and (not self.update_layers or
                                               (self.layer is not None and max(self.update_layers) > self.layer)):
            raise ConfigError(f"update_layers must be non-empty and ≤ layer {self.layer} (later layers cannot "
                              "change h_layer)")
        if not self.forms or self.check_every < 1 or not 0 <= self.stop_at < 1 or self.retain_texts < 0:
            raise ConfigError("RMUConfig needs forms, check_every >= 1, 0 <= stop_at < 1, retain_texts >= 0")


def _rows(handle, facts: Sequence[Fact], forms: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask}
            for b in (fact_batch(handle, facts, form) for form in forms)]


def _mask(batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    m = batch["attention_mask"].to(device=device, dtype=torch.bool, copy=True)
    m[:, 0] = False                            # the attention sink is left out
    return m


def rmu_unlearn(handle, forget: Sequence[Fact], retain: Sequence[Fact] = (), config: RMUConfig | None = None,
                texts: Sequence[str] | None = None, monitor: Monitor | None = None) -> Edit:
    """Train the update layers' MLP output matrices with the RMU objective; return the change as an Edit.
    `monitor` (optional): returns {"forget": ..., ...}; it decides the stop and is logged as a trajectory."""
    cfg = config or RMUConfig()
    if not isinstance(cfg, RMUConfig):
        raise ConfigError(f"config must be an RMUConfig, got {type(cfg).__name__}")
    cfg = resolve_config(cfg, handle)                      # None fields from the model's preset
    if not forget:
        raise InputError("rmu_unlearn() needs forget facts")
    handle.check_layer(cfg.layer)
    layers = cfg.update_layers or tuple(range(max(0, cfg.layer - 2), cfg.layer + 1))
    names = param_names(handle, layers, ("mlp_out",))
    f_batches = _rows(handle, forget, cfg.forms)
    r_batches = _rows(handle, retain, cfg.forms) if retain else []
    if cfg.retain_texts:
        from repedit.fit.saes import text_chunks

        chunks = text_chunks(handle, list(texts) if texts else load_text("wiki", "train")[:20], 64)[: cfg.retain_texts]
        if chunks:
            b = text_batch(handle, chunks, max_length=64)
            r_batches.append({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]})
    if not r_batches and cfg.alpha > 0:
        raise InputError("alpha > 0 needs retain facts or retain_texts > 0")
    probe = fact_batch(handle, forget, "blank")
    tracker = Tracker(monitor, cfg.check_every, cfg.stop_at)

    # nothing below the first update layer trains: the residual entering it is computed once per batch
    first = min(layers) if not handle.is_toy else 0
    with torch.no_grad():
        entry = {id(b): residual_after(handle, b["input_ids"], b["attention_mask"], first - 1)
                 for b in (*f_batches, *r_batches)} if first else {}

    def resid(b: dict[str, torch.Tensor]) -> torch.Tensor:         # h_layer at real tokens but the sink, float32
        with start_at(handle, first, entry[id(b)]) if first else nullcontext():
            h = residual_after(handle, b["input_ids"], b["attention_mask"], cfg.layer)
        return h[_mask(b, h.device)].float()

    with torch.no_grad():
        frozen = [resid(b) for b in r_batches]
        norm = torch.cat([resid(b).norm(dim=-1) for b in f_batches]).mean()
    coef = cfg.coef if cfg.coef is not None else cfg.coef_scale * float(norm)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)            # drawn on the CPU: the same u on any device
    u = torch.rand(handle.d_model, generator=g, device="cpu")
    target = (coef * u / u.norm()).to(norm.device, torch.float32)
    with training_only(handle, names) as trainable:
        opt = trainable.optimizer(cfg.lr)          # float32 masters: a half-precision model really learns
        for step in range(cfg.steps + 1):                  # the last pass only checks
            last = step == cfg.steps
            checked = tracker.due(step, last)
            if checked and (tracker.check(step, lambda: probe.answer_logprobs(handle).exp().mean()) or last):
                break
            fl = torch.stack([((h - target.to(h.device)) ** 2).mean() for h in map(resid, f_batches)]).mean()
            rl = torch.stack([((resid(b) - h0) ** 2).mean() for b, h0 in zip(r_batches, frozen)]).mean() \
                if r_batches else fl.new_zeros(())
            loss = fl + cfg.alpha * rl
            if checked:                                    # the losses beside the tracked row of this step
                tracker.rows[-1] |= {"forget_mse": round(float(fl.detach()), 4),
                                     "retain_mse": round(float(rl.detach()), 6)}
            opt.zero_grad()
            loss.backward()
            opt.step()
        deltas = tuple(DenseDelta(n, d) for n, d in trainable.changes().items())   # float32: master − original
        rounded = round(trainable.rounded_away(), 4)
    if not all(torch.isfinite(d.d).all() for d in deltas):
        raise InputError("RMU diverged (non-finite change); lower lr")
    return Edit(method="rmu", deltas=deltas, model_id=handle.id,
                config=config_record(cfg, coef_used=coef),
                target={"forget": [f.id for f in forget], "retain": [f.id for f in retain]},
                stats={"steps": tracker.rows[-1]["step"], "seconds": round(tracker.train_seconds, 2),
                       "rounded_away": rounded, **tracker.stats()})
