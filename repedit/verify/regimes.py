"""Natural vs injected memorisation: does a probe for one regime read the other?

On a toy model, *natural* memorisation is what the model memorised in (pre)training (its
repeated sequences); *injected* secrets are new random sequences memorised afterwards by
fine-tuning. A ridge probe fitted on all keys of one regime (M vs never-seen C) is tested on all
keys of the other; within-regime leave-one-key-out accuracy is the reference.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from repedit.errors import InputError
from repedit.fit.group_loo import correct, per_group_accuracy, zscore_stats
from repedit.fit.pool_features import PoolFeatures, pool_features
from repedit.models.handle import ModelHandle
from repedit.models.toy import exact_recall
from repedit.suites.pools import toy_pool
from repedit.verify.signature import ALPHA, depth_curve, t_interval


@dataclass(frozen=True)
class Injection:
    handle: ModelHandle          # the fine-tuned copy
    secrets: torch.Tensor        # [n, n_ctx] now memorised
    never_seen: torch.Tensor     # [2n, n_ctx] fresh sequences, never trained on
    steps: int
    recall_secrets: float        # exact recall after fine-tuning
    recall_natural: float        # exact recall of the trained-in memorised set after fine-tuning
    seconds: float


def inject_secrets(toy: ModelHandle, *, n_secrets: int = 24, min_steps: int = 0, max_steps: int = 300, lr: float = 3e-4,
                   replay: int = 64, seed: int = 1234, progress: bool = True) -> Injection:
    """Fine-tune a copy of a toy until it recalls `n_secrets` new random sequences exactly
    (checked every 10 steps, after at least `min_steps`; at most `max_steps`).

    Each step trains on all secrets plus `replay` of the toy's memorised sequences (so the
    natural set stays memorised). The original toy is not modified.
    """
    if not toy.is_toy or "sequences" not in toy.extras:
        raise InputError("inject_secrets takes a toy handle, e.g. repedit.load('toy:memorise')")
    cfg = toy.extras["toy_config"]
    g = torch.Generator(device="cpu").manual_seed(seed)
    fresh = torch.randint(0, cfg.d_vocab, (3 * n_secrets, cfg.n_ctx), generator=g, device="cpu").to(toy.input_device)
    secrets, never_seen = fresh[:n_secrets], fresh[n_secrets:]
    model = copy.deepcopy(toy.model).train()
    natural = toy.extras["sequences"]["memorised"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in tqdm(range(1, max_steps + 1), disable=not progress, desc="inject secrets"):
            idx = torch.randperm(len(natural), device="cpu")[:replay].to(natural.device)
            loss = model(torch.cat([secrets, natural[idx]]), return_type="loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 10 == 0 and step >= min_steps:
                with torch.no_grad():
                    if bool(exact_recall(model, secrets, cfg.prefix_len).all()):
                        break
    model.eval()
    with torch.no_grad():
        rs = float(exact_recall(model, secrets, cfg.prefix_len).float().mean())
        rn = float(exact_recall(model, natural, cfg.prefix_len).float().mean())
    extras = {k: v for k, v in toy.extras.items() if k != "backends"}
    handle = ModelHandle(
        id=f"{toy.id}+secrets{n_secrets}", model=model, tokenizer=toy.tokenizer, layout=toy.layout,
        n_layers=toy.n_layers, d_model=toy.d_model, d_mlp=toy.d_mlp, d_vocab=toy.d_vocab,
        source=f"{toy.source} fine-tuned on {n_secrets} secrets", is_toy=True, extras=extras)
    return Injection(handle, secrets, never_seen, step, rs, rn, time.perf_counter() - t0)


@dataclass(frozen=True)
class RegimeTransfer:
    depths: list[int]
    natural_loo: list[float]              # within-regime leave-one-key-out, M vs C
    injected_loo: list[float]
    natural_to_injected: list[float]      # probe fitted on natural keys, tested on injected keys
    natural_to_injected_ci: list[tuple[float, float]]
    injected_to_natural: list[float]
    recall_secrets: float
    recall_natural: float

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'depth':>5} {'nat LOO':>8} {'inj LOO':>8} {'nat->inj':>9} {'inj->nat':>9}"]
        for i, d in enumerate(self.depths):
            lines.append(f"{d:>5} {self.natural_loo[i]:8.3f} {self.injected_loo[i]:8.3f} "
                         f"{self.natural_to_injected[i]:9.3f} {self.injected_to_natural[i]:9.3f}")
        return "\n".join(lines)


def _cross(train: PoolFeatures, test: PoolFeatures, di: int, alpha: float) -> np.ndarray:
    """Per-test-key accuracy of a ridge probe fitted on every key of `train` (M vs C)."""
    Xa, ya, _ = train.task(di, "memorised", "paraphrase_c")
    Xb, yb, gb = test.task(di, "memorised", "paraphrase_c")
    mu, sd = zscore_stats(Xa)
    Z = np.hstack([(Xa - mu) / sd, np.ones((len(Xa), 1))])
    A = Z.T @ Z + alpha * np.diag(np.r_[np.ones(Z.shape[1] - 1), 0.0])
    w = np.linalg.solve(A, Z.T @ (2.0 * ya - 1.0))
    pred = np.hstack([(Xb - mu) / sd, np.ones((len(Xb), 1))]) @ w
    return per_group_accuracy(correct(pred, yb == 1), gb)


def natural_vs_injected(toy: ModelHandle, injection: Injection | None = None, *, n_keys: int = 24,
                        depths: Sequence[int] | None = None, alpha: float = ALPHA,
                        progress: bool = True) -> RegimeTransfer:
    """Within- and cross-regime probe accuracy per depth, measured on the secret-injected toy."""
    inj = injection or inject_secrets(toy, n_secrets=n_keys, progress=progress)
    model = inj.handle
    nat_pool = toy_pool(model, n_keys=n_keys, name="toy-natural")
    inj_pool = toy_pool(model, n_keys=min(n_keys, len(inj.secrets)), memorised=inj.secrets,
                        never_seen=inj.never_seen, name="toy-injected")
    nat = pool_features(model, nat_pool, depths=depths, progress=progress)
    injf = pool_features(model, inj_pool, depths=depths, progress=progress)
    nat_curve, _ = depth_curve(nat, alpha=alpha)
    inj_curve, _ = depth_curve(injf, alpha=alpha)
    n2i = [_cross(nat, injf, i, alpha) for i in range(len(nat.depths))]
    i2n = [_cross(injf, nat, i, alpha) for i in range(len(nat.depths))]
    return RegimeTransfer(
        depths=list(nat.depths), natural_loo=nat_curve.true_loo, injected_loo=inj_curve.true_loo,
        natural_to_injected=[float(a.mean()) for a in n2i],
        natural_to_injected_ci=[t_interval(a) for a in n2i],
        injected_to_natural=[float(a.mean()) for a in i2n],
        recall_secrets=inj.recall_secrets, recall_natural=inj.recall_natural)
