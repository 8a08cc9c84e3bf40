"""Forward passes shared by edits, baselines, attacks and measurements: fact batches with a differentiable
answer log-prob, a forward that stops after a block, one that starts at a block, and logits of the real
tokens only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from repedit.errors import InputError
from repedit.forward.text import answer_ids, prompt_ids, span_logprobs
from repedit.models.handle import pad_rows
from repedit.suites import Fact


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
    from repedit.forward.capture import select_positions
    from repedit.forward.generation import keeps_tail_logits

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
    from repedit.forward.generation import keeps_tail_logits

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
