"""Small pieces shared by every trained edit, baseline and attack: fact batches with a
differentiable answer log-prob, and a context that trains only chosen tensors of a frozen model
and puts every weight back bit for bit afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from repedit.errors import InputError
from repedit.forward.spill import Spilled, saved_copy


def lm_loss(handle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy, computed in float32 (half-precision logits are upcast first)."""
    logits = handle.forward(batch["input_ids"], batch["attention_mask"])[:, :-1].float()
    labels = batch["labels"][:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)
















def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam over float32 `params`, fused (one pass over each tensor instead of a dozen elementwise kernels: 3×
    faster per element on the CPU, the same update up to the last bit of some elements) where torch fuses
    it for their device (CPU, CUDA), else the default implementation."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


@dataclass(frozen=True)
class Trainable:
    """The tensors being trained. The optimiser updates `masters`: float32 leaves — the live parameter
    itself when it is already float32 or wider, else a float32 copy whose gradient is the live
    parameter's (moved over as it accumulates) and whose value is written back into the live
    half-precision parameter after every step (`optimizer()` wires both). Updates smaller than the half
    precision's spacing (Adam at lr 1e-5 on a bf16 weight) so accumulate instead of rounding away."""

    params: dict[str, torch.nn.Parameter]      # the live tensors the model computes with
    originals: Mapping[str, torch.Tensor]      # their values on entry (the live dtype; maybe on disk: `spill`)
    masters: dict[str, torch.Tensor]           # float32 leaves the optimiser updates

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Adam over the masters; after each `step()` the live parameters take the masters' values."""
        opt = adam(list(self.masters.values()), lr)
        opt.register_step_post_hook(lambda *_: self.sync())
        return opt

    @contextmanager
    def adam_in_backward(self, lr: float) -> Iterator[None]:
        """Inside, `loss.backward()` is a whole Adam step: each parameter is updated (its master, then the live
        tensor) as soon as its gradient is complete, and the gradient is dropped at once, so the gradients of
        all parameters never coexist (fine-tuning every weight holds one gradient at a time instead of P).
        The same numbers as `optimizer(lr)` with `zero_grad(); backward(); step()`: Adam is per element. Safe
        because a parameter's gradient is complete only after every node that saved it has run."""
        opts = {n: adam([m], lr) for n, m in self.masters.items()}

        @torch.no_grad()
        def step(n: str) -> None:
            p, m = self.params[n], self.masters[n]
            if m.grad is None:                     # (a half-precision gradient moves to the master first)
                return
            opts[n].step()
            m.grad = None
            if m is not p:
                p.copy_(m)

        hooks = [p.register_post_accumulate_grad_hook(lambda _p, n=n: step(n)) for n, p in self.params.items()]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    @torch.no_grad()
    def sync(self) -> None:
        """Write each float32 master into its live parameter (one cast to the parameter's dtype)."""
        for n, p in self.params.items():
            if self.masters[n] is not p:
                p.copy_(self.masters[n])

    def changes(self) -> dict[str, torch.Tensor]:
        """master − original per parameter, in float32 (the intended change, not its half-precision rounding)."""
        return {n: m.detach().float() - self.originals[n].float() for n, m in self.masters.items()}

    @torch.no_grad()
    def rounded_away(self) -> float:
        """Largest share, over the parameters, of the change's norm that the live dtype cannot hold:
        ‖live − master‖ / ‖master − original‖ (0 for float32 parameters). Merging `changes()` into the
        half-precision model loses this much (the live model trained and measured is that merge)."""
        worst = 0.0
        for n, p in self.params.items():
            m = self.masters[n]
            change = float((m - self.originals[n].float()).norm()) if m is not p else 0.0
            if change > 0:
                worst = max(worst, float((p.float() - m).norm()) / change)
        return worst


def _full_precision(p: torch.Tensor) -> bool:
    return not p.is_floating_point() or torch.finfo(p.dtype).bits >= 32


@contextmanager
def training_only(handle, names: Sequence[str] = ()) -> Iterator[Trainable]:
    """Freeze every parameter except `names` and start those with no gradient; on exit restore the exact
    original values (and .grad, unchanged) of those parameters and every requires_grad flag, also on
    exceptions. Half-precision parameters train through float32 masters (see `Trainable`); build the
    optimiser with `trainable.optimizer(lr)`."""
    params = dict(handle.model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise InputError(f"no parameters {unknown[:3]} in {handle.id}")
    flags = {n: p.requires_grad for n, p in params.items()}
    saved = saved_copy({n: params[n] for n in names})     # a whole-model save goes to a temporary file
    grads = {n: params[n].grad for n in names}
    masters = {n: params[n] if _full_precision(params[n]) else params[n].detach().float().requires_grad_(True)
               for n in names}
    hooks = []

    def move_grad(p: torch.Tensor, m: torch.Tensor) -> None:       # live half-precision grad → float32 master
        g = p.grad.float()
        m.grad = g if m.grad is None else m.grad + g
        p.grad = None

    try:
        for n, p in params.items():
            p.requires_grad_(n in saved)
            if n in saved:                # a gradient left from earlier work must neither enter the first step
                p.grad = None             # nor be accumulated into in place (it is handed back on exit)
        for n, m in masters.items():
            if m is not params[n]:
                hooks.append(params[n].register_post_accumulate_grad_hook(lambda p, m=m: move_grad(p, m)))
        yield Trainable({n: params[n] for n in names}, saved, masters)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)
                params[n].grad = grads[n]
        if isinstance(saved, Spilled):
            saved.close()
        for n, p in params.items():
            p.requires_grad_(flags[n])
