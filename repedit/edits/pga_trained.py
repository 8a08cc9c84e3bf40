"""Trained PGA: a small weight delta that aligns memorised and paraphrased texts along the live probe.

Objective (METHODS.md, PGA trained), per step on a minibatch of (key, context) pairs:
    L = align_weight · mean_i (wᵀ[h_d(M_i) − h_d(C_i)])² / a₀  +  ce_weight · CE(clean text)
h_d is the last-token residual at `depth`; w the unit readout direction (raw frame) of a logistic
probe M-vs-C fitted on the current model's activations, re-fitted every `refit_every` steps (so the
edit cannot just move the signature to a direction the old probe does not read); a₀ is the
alignment term at step 0 (so the term starts at 1). CE is the next-token loss on held-in clean
text (probes/text wiki train split), which keeps the language model. Only a rank-`rank` delta
A Bᵀ on the MLP output matrix of each layer in `layers` trains (A starts at zero, so training
starts from the unedited model); the result is an ordinary low-rank `Edit` — its weight form is
exact, there is nothing to fold.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from repedit.backends.base import get_backend
from repedit.edits.base import Edit, LowRankDelta, config_record
from repedit.edits.pga import _probe_direction
from repedit.errors import ConfigError, InputError
from repedit.fit.pool_features import CONTEXTS, depth_key, pool_rows
from repedit.fit.training import lm_loss, training_only
from repedit.forward.passes import text_batch
from repedit.models.handle import pad_rows
from repedit.models.presets import resolve_config
from repedit.suites import load_text
from repedit.suites.pools import Pool


@dataclass(frozen=True)
class TrainedPGAConfig:
    PRESET_SECTION: ClassVar[str] = "pga-trained"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("depth",)

    depth: int | None = None                #: None = the model's preset (the signature's peak; SmolLM2: 18)
    layers: tuple[int, ...] | None = None   #: None = the 4 layers before `depth`
    rank: int = 1                           #: one scalar constraint per depth = rank one (the source)
    steps: int = 40
    lr: float = 2e-3
    refit_every: int = 10
    align_weight: float = 1.0
    ce_weight: float = 1.0
    batch_pairs: int = 16
    n_contexts: int = 8
    clean_texts: int = 8                    #: wiki train documents for the LM term
    clean_tokens: int = 64                  #: tokens kept per document
    seed: int = 0

    def __post_init__(self) -> None:
        counts = (self.rank, self.steps, self.refit_every, self.batch_pairs, self.n_contexts, self.clean_tokens)
        if min(counts) < 1 or self.lr <= 0:
            raise ConfigError("TrainedPGAConfig needs rank, steps, refit_every, batch_pairs, n_contexts >= 1 "
                              "and lr > 0")
        if self.align_weight < 0 or self.ce_weight < 0:
            raise ConfigError("align_weight and ce_weight must be >= 0")
        if self.n_contexts > len(CONTEXTS):
            raise ConfigError(f"n_contexts must be <= {len(CONTEXTS)} (the neutral context templates)")

    def edit_layers(self) -> tuple[int, ...]:
        if self.depth is None:
            raise ConfigError("TrainedPGAConfig.depth is None: resolve it first "
                              "(repedit.models.presets.resolve_config)")
        return self.layers if self.layers is not None else tuple(range(max(0, self.depth - 4), self.depth))


@contextmanager
def _lora(handle, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Add x·B·Aᵀ to each named Linear's output (the hook form of W + A Bᵀ, differentiable); the term is
    computed in float32 (A, B are float32) and cast once to the output's dtype."""
    hooks = []
    try:
        for name, (A, B) in factors.items():
            module = handle.model.get_submodule(name.rpartition(".")[0])
            hooks.append(module.register_forward_hook(
                lambda _m, args, out, A=A, B=B: out + ((args[0].float() @ B) @ A.T).to(out.dtype)))
        yield
    finally:
        for h in hooks:
            h.remove()


def _last_token(handle, rows: list[list[int]], depth: int) -> torch.Tensor:
    """Differentiable last-token residual at `depth` for token rows: [n, d_model]."""
    store = {}

    def grab(x):
        store["x"] = x
        return x

    batch = pad_rows(rows, handle.pad_id, device=handle.input_device)
    get_backend(handle, "torch").run(batch["input_ids"], batch["attention_mask"], writes={depth_key(depth): grab},
                                     stop_early=True)
    x = store["x"]
    last = batch["attention_mask"].to(x.device).sum(1) - 1
    return x[torch.arange(len(rows), device=x.device), last]


def _direction(handle, m_rows, c_rows, depth: int) -> torch.Tensor:
    """Unit readout direction (raw frame) of a logistic probe M vs C on the current model."""
    with torch.no_grad():
        X = torch.cat([torch.cat([_last_token(handle, r[i: i + 16], depth) for i in range(0, len(r), 16)])
                       for r in (m_rows, c_rows)]).double().cpu().numpy()
    y = np.r_[np.ones(len(m_rows)), np.zeros(len(c_rows))]
    mu, sd = X.mean(0), X.std(0) + 1e-6
    w = _probe_direction((X - mu) / sd, y) / sd
    return torch.tensor(w / np.linalg.norm(w), dtype=torch.float32, device=handle.device)


def trained_pga(handle, pool: Pool, config: TrainedPGAConfig | None = None, *, progress: bool = True) -> Edit:
    """Train the low-rank delta described in the module docstring; returns it as an Edit."""
    cfg = config or TrainedPGAConfig()
    if pool.tokens:
        raise InputError("trained_pga() needs a text pool (load_pool('natural')), not a token pool")
    cfg = resolve_config(cfg, handle)                       # None fields from the model's preset
    if not 1 <= cfg.depth <= handle.n_layers:
        raise ConfigError(f"depth must lie in 1..{handle.n_layers}, got {cfg.depth}")
    layers = cfg.edit_layers()
    if any(not 0 <= layer < cfg.depth for layer in layers):
        raise ConfigError(f"layers must lie below the depth {cfg.depth} (they write what the probe reads), "
                          f"got {layers}")
    rows, n_views = pool_rows(handle, pool, CONTEXTS[: cfg.n_contexts], 96)
    k = len(pool.keys)
    m_rows = [rows[(i * 3 + 0) * n_views + v] for i in range(k) for v in range(n_views)]
    c_rows = [rows[(i * 3 + 1) * n_views + v] for i in range(k) for v in range(n_views)]
    clean = text_batch(handle, load_text("wiki", "train")[: cfg.clean_texts], max_length=cfg.clean_tokens)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)      # drawn on the CPU: the same init anywhere
    rng = random.Random(cfg.seed)
    names = [handle.matrix("mlp_out", layer).name for layer in layers]
    factors = {}                                   # float32 leaves on the hooked matrix's device, any model dtype
    for n in names:
        W = handle.model.get_parameter(n)
        B = torch.randn(W.shape[1], cfg.rank, generator=gen, device="cpu") / W.shape[1] ** 0.5
        factors[n] = (torch.zeros(W.shape[0], cfg.rank, device=W.device, dtype=torch.float32, requires_grad=True),
                      B.to(W.device).requires_grad_(True))
    opt = torch.optim.Adam([t for ab in factors.values() for t in ab], lr=cfg.lr)
    t0, log, a0, w = time.perf_counter(), [], None, None
    with training_only(handle), _lora(handle, factors):
        for step in tqdm(range(cfg.steps), disable=not progress, desc="trained PGA"):
            if step % cfg.refit_every == 0:
                w = _direction(handle, m_rows, c_rows, cfg.depth)
            idx = rng.sample(range(len(m_rows)), min(cfg.batch_pairs, len(m_rows)))
            diff = _last_token(handle, [m_rows[i] for i in idx], cfg.depth).float() - \
                _last_token(handle, [c_rows[i] for i in idx], cfg.depth).float()
            align = ((diff @ w.to(diff.device)) ** 2).mean()
            a0 = a0 if a0 is not None else float(align.detach()) + 1e-8
            ce = lm_loss(handle, clean)
            loss = cfg.align_weight * align / a0 + cfg.ce_weight * ce
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.append((round(float(align.detach()) / a0, 4), round(float(ce.detach()), 4)))
    deltas = tuple(LowRankDelta(n, A.detach().clone(), B.detach().clone()) for n, (A, B) in factors.items())
    cfg_record = config_record(cfg, layers=list(layers))
    return Edit(method="pga-trained", deltas=deltas, model_id=handle.id, config=cfg_record,
                target={"pool": pool.name, "keys": [key.key for key in pool.keys], "depth": cfg.depth},
                stats={"align_over_a0_and_ce_per_step": log, "seconds": round(time.perf_counter() - t0, 2)})
