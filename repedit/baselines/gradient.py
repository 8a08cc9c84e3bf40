"""Gradient-ascent (GA) and NPO unlearning baselines, as `Edit`s of dense deltas.

GA minimises  L = mean_forget log p(answer)  (+ retain_weight · CE(retain answers)), i.e. pushes the
forget answers' likelihood down. NPO (Zhang et al. 2024) minimises
  L = −(2/β) mean_forget log σ(−β (log p_θ(y|x) − log p_ref(y|x)))  (+ the same retain term),
with log p the summed answer log-prob and p_ref the model before the edit; its loss saturates as
the forget likelihood falls, so it drifts less than GA. Both train the chosen matrices (default:
the MLP output matrices of all layers) on the facts in `forms` with Adam and stop early once the
mean forget answer probability is at or below `stop_at`: with a `monitor` (recipe runs), the run's
forget measure checked every `check_every` steps (`repedit.baselines.tracking`); without one, the
training batch's (mean over `forms`). Each step is one packed forward of every form's forget and retain
rows (`repedit.forward.packed.answer_scorer`). The model is left bit-identical; the change is returned.
On a bf16 / fp16 model the trained matrices are float32 masters (`repedit.fit.training.training_only`):
the returned change is float32 (master − original), and `stats['rounded_away']` is the largest share of
a matrix's change that the model's dtype cannot hold (what merging it into that model loses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from repedit.baselines.tracking import Monitor, Tracker
from repedit.edits.base import DenseDelta, Edit, config_record
from repedit.errors import ConfigError, InputError
from repedit.fit.training import training_only
from repedit.forward.packed import answer_scorer
from repedit.forward.passes import fact_batch
from repedit.suites import Fact


@dataclass(frozen=True)
class GradientConfig:
    objective: str = "ga"                  #: "ga" | "npo"
    layers: tuple[int, ...] | None = None  #: None = every layer
    matrices: tuple[str, ...] = ("mlp_out",)
    steps: int = 40
    lr: float = 1e-5
    beta: float = 0.1                      #: NPO temperature
    retain_weight: float = 0.0             #: 0 = pure GA / NPO; > 0 adds CE on retain answers
    stop_at: float = 0.05                  #: stop once mean forget answer probability ≤ this
    forms: tuple[str, ...] = ("blank",)    #: fact forms trained on (loss averaged over them)
    check_every: int = 5                   #: steps between monitor checks (recipe runs)

    def __post_init__(self) -> None:
        if self.objective not in ("ga", "npo"):
            raise ConfigError(f"objective must be 'ga' or 'npo', got {self.objective!r}")
        if self.steps < 1 or self.lr <= 0 or self.beta <= 0 or self.retain_weight < 0 or not 0 <= self.stop_at < 1 \
                or self.check_every < 1:
            raise ConfigError("GradientConfig needs steps >= 1, lr > 0, beta > 0, retain_weight >= 0, "
                              "0 <= stop_at < 1, check_every >= 1")
        if not self.forms or "mc" in self.forms:
            raise ConfigError("forms must be free-text fact forms (blank, qa, paraphrase, adversarial), "
                              f"got {self.forms}")
        if not self.matrices or any(m not in ("mlp_out", "mlp_in", "attn_out") for m in self.matrices):
            raise ConfigError(f"matrices must be among mlp_out, mlp_in, attn_out; got {self.matrices}")


def param_names(handle, layers: Sequence[int] | None, matrices: Sequence[str]) -> list[str]:
    layers = range(handle.n_layers) if layers is None else layers
    for layer in layers:
        handle.check_layer(layer)
    return [handle.matrix(kind, layer).name for layer in layers for kind in matrices]


def gradient_unlearn(handle, forget: Sequence[Fact], retain: Sequence[Fact] = (),
                     config: GradientConfig | None = None, monitor: Monitor | None = None) -> Edit:
    """Train the chosen matrices with the GA or NPO objective; return the change as an Edit.
    `monitor` (optional): returns {"forget": ..., ...}; it decides the stop and is logged as a trajectory."""
    cfg = config or GradientConfig()
    if not forget:
        raise InputError("gradient_unlearn() needs forget facts")
    if cfg.retain_weight > 0 and not retain:
        raise InputError("retain_weight > 0 needs retain facts")
    names = param_names(handle, cfg.layers, cfg.matrices)
    retain = list(retain) if cfg.retain_weight > 0 else []
    score = answer_scorer(handle, forget, retain, cfg.forms)     # one packed forward: every form, both sets
    tracker, log = Tracker(monitor, cfg.check_every if monitor else 1, cfg.stop_at), []
    with torch.no_grad():
        lp0 = score()[0]                                                       # [forms × forget], float32
    lengths = torch.tensor([len(a) for form in cfg.forms for a in fact_batch(handle, forget, form).answers],
                           dtype=torch.float32, device=lp0.device)
    ref = lp0 * lengths                                                        # summed answer log-prob before
    with training_only(handle, names) as trainable:
        opt = trainable.optimizer(cfg.lr)          # float32 masters: a half-precision model really learns
        for step in range(cfg.steps + 1):                      # the last pass only checks
            lp_forget, lp_retain = score()
            p_forget = float(lp_forget.detach().exp().mean())
            log.append(p_forget)
            last = step == cfg.steps
            if (tracker.due(step, last) and tracker.check(step, lambda: p_forget)) or last:
                break
            if cfg.objective == "ga":
                loss = lp_forget.mean()
            else:
                ratio = lp_forget * lengths - ref
                loss = -(2 / cfg.beta) * torch.nn.functional.logsigmoid(-cfg.beta * ratio).mean()
            if retain:
                loss = loss - cfg.retain_weight * lp_retain.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        deltas = tuple(DenseDelta(n, d) for n, d in trainable.changes().items())   # float32: master − original
        rounded = round(trainable.rounded_away(), 4)
    return Edit(method=cfg.objective, deltas=deltas, model_id=handle.id,
                config=config_record(cfg),
                target={"forget": [f.id for f in forget], "retain": [f.id for f in retain]},
                stats={"steps": len(log) - 1, "forget_probability_per_step": [round(x, 5) for x in log],
                       "seconds": round(tracker.train_seconds, 2), "rounded_away": rounded, **tracker.stats()})
