"""Small pieces shared by every trained edit, baseline and attack: fact batches with a
differentiable answer log-prob, and a context that trains only chosen tensors of a frozen model
and puts every weight back bit for bit afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .errors import InputError
from .models.handle import pad_rows
from .suites import Fact
from .verify.recall import answer_ids, prompt_ids, span_logprobs


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
    rows = pad_rows([p + a for p, a in zip(prompts, answers)], handle.pad_id)
    return FactBatch(rows["input_ids"], rows["attention_mask"], prompts, answers)


def text_batch(handle, texts: Sequence[str], max_length: int = 128) -> dict[str, torch.Tensor]:
    """Token batch of plain texts with `labels` (padding masked to −100) for next-token loss."""
    if not texts:
        raise InputError("text_batch() needs at least one text")
    b = handle.encode(list(texts), max_length=max_length)
    labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "labels": labels}


def lm_loss(handle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = handle.forward(batch["input_ids"], batch["attention_mask"])[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                                             ignore_index=-100)


def residual_after(handle, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream [batch, seq, d_model] at the output of block `layer`, gradients kept; the
    forward stops there (later blocks never run)."""
    from .backends.base import StopForward

    got = {}

    def grab(_m, _args, out):
        got["h"] = out[0] if isinstance(out, tuple) else out
        raise StopForward

    hook = handle.layer_module(layer).register_forward_hook(grab)
    try:
        handle.forward(input_ids, attention_mask)
    except StopForward:
        pass
    finally:
        hook.remove()
    return got["h"]


@dataclass(frozen=True)
class Trainable:
    params: dict[str, torch.nn.Parameter]      # the live tensors being trained
    originals: dict[str, torch.Tensor]         # their values on entry

    def changes(self) -> dict[str, torch.Tensor]:
        return {n: (p.detach() - self.originals[n]).clone() for n, p in self.params.items()}


@contextmanager
def training_only(handle, names: Sequence[str] = ()) -> Iterator[Trainable]:
    """Freeze every parameter except `names`; on exit restore the exact original values of those
    parameters and every requires_grad flag, also on exceptions."""
    params = dict(handle.model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise InputError(f"no parameters {unknown[:3]} in {handle.id}")
    flags = {n: p.requires_grad for n, p in params.items()}
    saved = {n: params[n].detach().clone() for n in names}
    try:
        for n, p in params.items():
            p.requires_grad_(n in saved)
        yield Trainable({n: params[n] for n in names}, saved)
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)
        for n, p in params.items():
            p.requires_grad_(flags[n])
