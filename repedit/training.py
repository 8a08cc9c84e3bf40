"""Small pieces shared by every trained edit, baseline and attack: fact batches with a
differentiable answer log-prob, and a context that trains only chosen tensors of a frozen model
and puts every weight back bit for bit afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from repedit.errors import InputError
from repedit.models.handle import pad_rows
from repedit.spill import Spilled, saved_copy
from repedit.suites import Fact
from repedit.text import answer_ids, prompt_ids, span_logprobs


@dataclass(frozen=True)
class FactBatch:
    """Rows prompt + answer of some facts in one form (right-padded) and where the answers are."""

    input_ids: torch.Tensor          # [batch, seq]
    attention_mask: torch.Tensor     # [batch, seq]
    prompts: list[list[int]]
    answers: list[list[int]]

    def answer_logprobs(self, handle) -> torch.Tensor:
        """Mean log-prob per answer token, differentiable: [batch]."""
        logits = handle.forward(self.input_ids, self.attention_mask)
        return span_logprobs(logits, self.prompts, self.answers)


def fact_batch(handle, facts: Sequence[Fact], form: str = "blank") -> FactBatch:
    if not facts:
        raise InputError("fact_batch() needs at least one fact")
    missing = [f.id for f in facts if form not in f.forms]
    if missing or form == "mc":
        raise InputError(f"form {form!r} is not a free-text form of {missing or 'these facts'}; use blank, qa, "
                         "paraphrase or adversarial")
    specs = [f.forms[form] for f in facts]
    prompts = [prompt_ids(handle, s["prompt"], s["chat"]) for s in specs]
    answers = [answer_ids(handle, f.answer, s["chat"]) for f, s in zip(facts, specs)]
    rows = pad_rows([p + a for p, a in zip(prompts, answers)], handle.pad_id, device=handle.input_device)
    return FactBatch(rows["input_ids"], rows["attention_mask"], prompts, answers)


def text_batch(handle, texts: Sequence[str], max_length: int = 128) -> dict[str, torch.Tensor]:
    """Token batch of plain texts with `labels` (padding masked to −100) for next-token loss."""
    if not texts:
        raise InputError("text_batch() needs at least one text")
    b = handle.encode(list(texts), max_length=max_length)
    labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "labels": labels}


def lm_loss(handle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy, computed in float32 (half-precision logits are upcast first)."""
    logits = handle.forward(batch["input_ids"], batch["attention_mask"])[:, :-1].float()
    labels = batch["labels"][:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)


def run_until(handle, layer: int, forward: Callable[[], object]) -> torch.Tensor:
    """The residual stream [batch, seq, d_model] at the output of block `layer` while `forward()` (a call into
    the model) runs, gradients kept; the forward stops there (later blocks never run)."""
    from repedit.backends.base import StopForward

    got = {}

    def grab(_m, _args, out):
        got["h"] = out[0] if isinstance(out, tuple) else out
        raise StopForward

    hook = handle.layer_module(layer).register_forward_hook(grab)
    try:
        forward()
    except StopForward:
        pass
    finally:
        hook.remove()
    return got["h"]


def residual_after(handle, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream [batch, seq, d_model] at the output of block `layer` of a plain forward (`run_until`)."""
    return run_until(handle, layer, lambda: handle.forward(input_ids, attention_mask))


def last_token_logits(handle, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits [batch, vocab] at each right-padded row's last real token, gradients kept; Hugging Face models
    unembed only those positions (`logits_to_keep`)."""
    from repedit.capture import select_positions
    from repedit.generation import keeps_tail_logits

    if not keeps_tail_logits(handle):
        return select_positions(handle.forward(input_ids, attention_mask), attention_mask, -1)
    dev = handle.input_device
    last = attention_mask.to(dev).sum(-1) - 1                                   # [batch]
    kept, row_pos = torch.unique(last, return_inverse=True)
    logits = handle.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                          logits_to_keep=kept).logits                           # [batch, kept, vocab]
    return logits[torch.arange(len(last), device=logits.device), row_pos.to(logits.device)]


def real_token_logits(handle, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits [real tokens, vocab] at every position whose mask is 1 (row-major), gradients kept; on Hugging
    Face models padding never reaches the unembedding (only the real positions are unembedded)."""
    from repedit.generation import keeps_tail_logits

    keep = attention_mask.bool()
    if not keeps_tail_logits(handle):
        logits = handle.forward(input_ids, attention_mask)
        return logits[keep.to(logits.device)]
    with unembedding_only(handle, lambda h: h[keep.to(h.device)]):
        return handle.forward(input_ids, attention_mask)[0]


@contextmanager
def unembedding_only(handle, rows: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside, a Hugging Face model's unembedding sees only `rows(hidden)` [n, d_model] of the hidden states it
    is given, as one sequence [1, n, d_model]: its logits come out [1, n, vocab] (no other position unembedded)."""
    def select(_m, args):
        return (rows(args[0])[None], *args[1:])

    hook = handle.model.get_output_embeddings().register_forward_pre_hook(select)
    try:
        yield
    finally:
        hook.remove()


def _pass_hidden(hidden_states, *args, **kwargs):
    return hidden_states


@contextmanager
def start_at(handle, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Inside, a forward skips blocks 0..layer−1 and block `layer` reads `hidden` [batch, seq, d_model] —
    the residual entering it, computed once for the same batch (`residual_after(..., layer − 1)`). Exact
    while nothing before `layer` changes (a trained edit at `layer` or later); the embedding still runs.
    Hugging Face decoder stacks only (blocks take the residual first and return it)."""
    if layer == 0:
        yield
        return
    skipped = [handle.layer_module(i) for i in range(layer)]

    def feed(_m, args, kwargs):
        if args:
            return (hidden.to(args[0].device, args[0].dtype), *args[1:]), kwargs
        kwargs["hidden_states"] = hidden.to(kwargs["hidden_states"].device, kwargs["hidden_states"].dtype)
        return args, kwargs

    hook = handle.layer_module(layer).register_forward_pre_hook(feed, with_kwargs=True)
    for m in skipped:
        m.forward = _pass_hidden
    try:
        yield
    finally:
        hook.remove()
        for m in skipped:
            m.__dict__.pop("forward", None)


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
