"""ROCR's target values z* (the residual at the last edit layer, at the target's last token).

- `read_value`: the residual of a harmless concept H in the first context (ORT's "unrelated" mode:
  the model reads T as it reads H; no optimisation);
- `refusal_value`: ORT's optimised mode (ROME's value search): z* = h_L(T) + δ, with δ found by Adam so
  that after "<context ending in T>." the model continues with `refusal` (e.g. "Unfortunately"),
  minus a KL term keeping the next-token distribution at T in "{T} is a" close to the original and a
  norm clamp ‖δ‖ ≤ `clamp` · ‖h_L(T)‖. Only δ trains; the weights are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from repedit.errors import InputError
from repedit.forward.capture import capture
from repedit.models.handle import pad_rows
from repedit.sites import Site


def read_value(handle, concept: str, layer: int, context: str) -> torch.Tensor:
    """[d_model] float64 CPU: resid_post of `layer` at the last token of `context` filled with `concept`."""
    site = Site(layer, "resid_post")
    acts = capture(handle, [context.format(concept)], [site], progress=False)[site]
    return acts[0].double().cpu()


def refusal_value(handle, target: str, layer: int, contexts: Sequence[str], refusal: str, *, steps: int = 20,
                  lr: float = 0.5, clamp: float = 4.0, kl_weight: float = 0.0625) -> tuple[torch.Tensor, dict]:
    """[d_model] float64 CPU z* and stats (initial / final refusal probability, ‖δ‖ / ‖h‖)."""
    if not refusal.strip():
        raise InputError("refusal_value() needs a non-empty refusal text, e.g. 'Unfortunately'")
    tok = handle.tokenizer
    cont = tok.encode(" " + refusal.strip(), add_special_tokens=False)
    prefixes = [handle.encode([c.format(target)])["input_ids"][0].tolist() for c in contexts]
    dot = tok.encode(".", add_special_tokens=False)
    rows = [p + dot + cont for p in prefixes]                       # "<context ending in T>. Unfortunately"
    kl_prefix = handle.encode([f"{target}"])["input_ids"][0].tolist()
    kl_row = kl_prefix + tok.encode(" is a", add_special_tokens=False)
    batch = pad_rows(rows + [kl_row], handle.pad_id, device=handle.input_device)
    subject_pos = [len(p) - 1 for p in prefixes] + [len(kl_prefix) - 1]
    starts = [len(p) + len(dot) for p in prefixes]
    block = handle.layer_module(layer)
    param = next(block.parameters())
    delta = torch.zeros(handle.d_model, device=param.device, dtype=torch.float32, requires_grad=True)
    rows_idx = torch.arange(len(subject_pos), device=param.device)
    pos_idx = torch.tensor(subject_pos, device=param.device)
    init = {}

    def add_delta(_m, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        if "h" not in init:
            init["h"] = h[0, subject_pos[0]].detach().float().clone()
        h = h.clone()
        h[rows_idx, pos_idx] = h[rows_idx, pos_idx] + delta.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def refusal_logprob(logits: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(logits.float(), -1)
        per_row = []
        for r, s in enumerate(starts):
            ids = torch.tensor(cont, device=lp.device)
            per_row.append(lp[r, torch.arange(s - 1, s - 1 + len(cont), device=lp.device), ids].mean())
        return torch.stack(per_row)

    requires = [p.requires_grad for p in handle.model.parameters()]
    for p in handle.model.parameters():
        p.requires_grad_(False)
    hook = block.register_forward_hook(add_delta)
    opt = torch.optim.Adam([delta], lr=lr)
    kl_ref, first = None, None
    try:
        for _ in range(steps):
            opt.zero_grad()
            logits = handle.forward(batch["input_ids"], batch["attention_mask"])
            lp = refusal_logprob(logits)
            kl_lp = torch.log_softmax(logits[-1, subject_pos[-1]].float(), -1)
            if kl_ref is None:
                kl_ref, first = kl_lp.detach(), float(lp.detach().exp().mean())
            kl = torch.nn.functional.kl_div(kl_lp, kl_ref, log_target=True, reduction="sum")
            loss = -lp.mean() + kl_weight * kl
            loss.backward()
            opt.step()
            with torch.no_grad():
                limit = clamp * init["h"].norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
        with torch.no_grad():
            last = float(refusal_logprob(handle.forward(batch["input_ids"], batch["attention_mask"])).exp().mean())
    finally:
        hook.remove()
        for p, r in zip(handle.model.parameters(), requires):
            p.requires_grad_(r)
    z = (init["h"] + delta.detach()).double().cpu()
    return z, {"refusal_p_before": first, "refusal_p_after": last,
               "delta_ratio": float(delta.detach().norm() / init["h"].norm())}
