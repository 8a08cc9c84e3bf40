"""REMIND (Cohen, Nemcovsky & Mendelson 2025, "Input Loss Landscapes Reveal Residual Memorization in
Post-Unlearning LLMs"): probe the loss over small perturbations of each input; the neighbourhood of an
unlearned item keeps a shape that a single loss value hides.

What the paper does, as far as its abstract and summaries state it, and how this module follows it:

- Perturbations ("embedding-proximity"): each variant replaces tokens of the input by one of their
  nearest neighbours in the model's input embedding (cosine similarity). Here every variant replaces
  `n_changed` distinct tokens (the radius) in positions [start, stop), each by one of its `neighbours`
  nearest tokens, drawn uniformly. On the byte toy these are in effect random substitutions.
- Loss: mean next-token NLL. With `stop` set, only the tokens from `stop` on are scored (the input
  changes, the continuation scored stays the same: a loss over inputs); without it, every token
  after the first, perturbed ones included.
- Landscape per item: the loss at the input, the mean and std over `n_perturbations` variants, and
  the sharpness, mean |loss(variant) − loss(input)|.
- Statistic: sharpness, compared between forget and retain items. `RemindResult.auc` is the AUC of
  forget items being sharper than retain items. The paper finds unlearned LLM items *flatter* than
  retained or unseen natural text (auc < 0.5); against unseen random-token items, which are flat
  themselves (the toy), the residue shows as *sharper* (auc > 0.5). Either way a forget set whose
  neighbourhoods differ from the retain set's carries residue; `separation` = max(auc, 1 − auc) and
  `direction` say how much and which way. The paper fits a classifier on neighbourhood features;
  repedit reports the single statistic (no fitting, no split needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from repedit.errors import ConfigError, InputError
from repedit.verify.benchmarks.text import auc, row_logprobs

__all__ = ["RemindConfig", "RemindResult", "landscape", "perturbations", "remind"]


@dataclass(frozen=True)
class RemindConfig:
    """How each input's neighbourhood is sampled."""

    n_perturbations: int = 16   #: variants per input (the paper's K)
    n_changed: int = 1          #: tokens replaced in each variant (the radius)
    neighbours: int = 8         #: a replacement is one of the token's this-many nearest embeddings
    start: int = 1              #: first position that may change (0 would replace the first token)
    stop: int | None = None     #: positions from here on never change and alone are scored (None: all)
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("n_perturbations", "n_changed", "neighbours", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"RemindConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.start, int) or self.start < 1:
            raise ConfigError(f"RemindConfig.start must be >= 1 (the first token has no loss), got {self.start!r}")
        if self.stop is not None and self.stop - self.start < self.n_changed:
            raise ConfigError(f"RemindConfig: positions [{self.start}, {self.stop}) leave no room to change "
                              f"{self.n_changed} token(s)")


@torch.no_grad()
def _nearest(handle, tokens: list[int], n: int) -> dict[int, list[int]]:
    """The `n` nearest tokens of each token by cosine similarity of input embeddings (itself excluded)."""
    ref = handle.matrix("embed")
    emb = ref.param.detach().float()                         # float32 maths on the embedding's device
    emb = emb.T if ref.orientation == "d_vocab" else emb     # [vocab, d]
    if n >= emb.shape[0]:
        raise ConfigError(f"RemindConfig.neighbours ({n}) must be below the vocabulary size ({emb.shape[0]})")
    unit = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ids = torch.tensor(tokens, dtype=torch.long, device=unit.device)
    sims = unit[ids] @ unit.T                                # [tokens, vocab]
    sims[torch.arange(len(tokens), device=unit.device), ids] = -torch.inf
    return dict(zip(tokens, sims.topk(n, dim=-1).indices.tolist()))


def perturbations(handle, row: Sequence[int], config: RemindConfig,
                  generator: torch.Generator) -> list[list[int]]:
    """`config.n_perturbations` variants of a token row, each with `n_changed` tokens in [start, stop)
    replaced by embedding neighbours. `generator` is a CPU torch.Generator (reproducible draws)."""
    row = [int(t) for t in row]
    stop = len(row) if config.stop is None else min(config.stop, len(row))
    if stop - config.start < config.n_changed:
        raise InputError(f"a row of {len(row)} tokens has fewer than {config.n_changed} positions in "
                         f"[{config.start}, {stop}) to change")
    near = _nearest(handle, sorted(set(row[config.start:stop])), config.neighbours)
    out = []
    for _ in range(config.n_perturbations):
        where = torch.randperm(stop - config.start, generator=generator, device="cpu")[:config.n_changed]
        pick = torch.randint(0, config.neighbours, (config.n_changed,), generator=generator, device="cpu")
        variant = list(row)
        for pos, j in zip((where + config.start).tolist(), pick.tolist()):
            variant[pos] = near[row[pos]][j]
        out.append(variant)
    return out


def landscape(handle, rows: Sequence[Sequence[int]], config: RemindConfig = RemindConfig()) -> dict[str, np.ndarray]:
    """Per row: `loss` at the input, `mean` and `std` of the loss over its perturbations, and
    `sharpness` = mean |loss(variant) − loss(input)| ({name: [n_rows]})."""
    if not rows:
        raise InputError("landscape() needs at least one row")
    first = config.stop or 1                                   # first scored position
    if any(len(r) <= first for r in rows):
        raise InputError(f"every row needs more than stop={first} tokens (the scored continuation)")
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    batch = []
    for row in rows:
        batch += [[int(t) for t in row], *perturbations(handle, row, config, gen)]
    losses = np.array([-lp[first - 1:].mean() for lp in row_logprobs(handle, batch, config.batch_size)])
    losses = losses.reshape(len(rows), 1 + config.n_perturbations)            # [rows, 1 + K]
    orig, pert = losses[:, 0], losses[:, 1:]
    return {"loss": orig, "mean": pert.mean(1), "std": pert.std(1),
            "sharpness": np.abs(pert - orig[:, None]).mean(1)}


@dataclass(frozen=True)
class RemindResult:
    """Landscape summaries of forget and retain items and how well sharpness tells them apart."""

    forget: dict[str, float]    # mean over items of loss / mean / std / sharpness
    retain: dict[str, float]
    auc: float                  # forget sharper than retain (< 0.5: flatter)
    loss_auc: float             # forget lower loss than retain: what the plain loss alone tells
    config: RemindConfig

    @property
    def separation(self) -> float:
        return max(self.auc, 1 - self.auc)

    @property
    def direction(self) -> str:
        return "sharper" if self.auc > 0.5 else "flatter" if self.auc < 0.5 else "none"

    def to_dict(self) -> dict:
        return {"forget": dict(self.forget), "retain": dict(self.retain), "auc": self.auc,
                "separation": self.separation, "direction": self.direction, "loss_auc": self.loss_auc,
                "statistic": "sharpness: AUC of forget sharper than retain", "config": asdict(self.config)}


def remind(handle, forget_rows: Sequence[Sequence[int]], retain_rows: Sequence[Sequence[int]],
           config: RemindConfig = RemindConfig()) -> RemindResult:
    """REMIND of forget vs retain rows: landscape summaries and the sharpness AUC (see module doc)."""
    f, r = landscape(handle, forget_rows, config), landscape(handle, retain_rows, config)
    return RemindResult(
        forget={k: float(v.mean()) for k, v in f.items()}, retain={k: float(v.mean()) for k, v in r.items()},
        auc=auc(f["sharpness"], r["sharpness"]), loss_auc=auc(-f["loss"], -r["loss"]), config=config)
