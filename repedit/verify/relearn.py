"""Relearning attack: fine-tune the edited model a few steps on some forget facts and watch how much
of the forgotten knowledge returns — on the facts trained on and on held-out forget facts.

The attacker fine-tunes every parameter (Adam, `lr`) on prompt + answer of `train` facts in one
form; every `every` steps the mean answer probability (over `forms`) of `train` and `held_out` is
measured. Hook-form edits stay active throughout if passed as `during` (a context manager factory,
e.g. `lambda: proj.active(handle)`). The weights are restored bit for bit afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch

from repedit.errors import InputError
from repedit.fit.training import training_only
from repedit.forward.answer_scores import answer_logprobs
from repedit.forward.passes import fact_batch
from repedit.suites import Fact

EVAL_FORMS = ("blank", "qa", "paraphrase", "adversarial")


@dataclass(frozen=True)
class RelearnCurve:
    steps: list[int]
    train: list[float]            # mean answer probability of the facts fine-tuned on
    held_out: list[float]         # mean answer probability of forget facts never shown
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def relearn(handle, train: Sequence[Fact], held_out: Sequence[Fact], *, steps: int = 30, lr: float = 1e-5,
            every: int = 5, form: str = "blank", forms: Sequence[str] = EVAL_FORMS,
            during: Callable | None = None) -> RelearnCurve:
    """Fine-tune on `train` (form `form`) for `steps`; measure `train` and `held_out` every `every` steps."""
    if not train or not held_out:
        raise InputError("relearn() needs facts to fine-tune on and held-out forget facts to measure")
    if steps < 1 or every < 1 or lr <= 0:
        raise InputError("relearn() needs steps >= 1, every >= 1, lr > 0")
    t0 = time.perf_counter()
    ctx = during or nullcontext
    batch = fact_batch(handle, train, form)
    names = [n for n, _ in handle.model.named_parameters()]
    curve = RelearnCurve([], [], [], {"steps": steps, "lr": lr, "form": form, "forms": list(forms),
                                      "train": [f.id for f in train], "held_out": [f.id for f in held_out]})

    def measure(step: int) -> None:                   # both sets scored in one batched pass
        with torch.no_grad():
            p = answer_logprobs(handle, [*train, *held_out], forms).exp()
            curve.steps.append(step)
            curve.train.append(round(float(p[: len(train)].mean()), 5))
            curve.held_out.append(round(float(p[len(train):].mean()), 5))

    with training_only(handle, names) as trainable, ctx(), trainable.adam_in_backward(lr):
        measure(0)                             # float32 masters: a half-precision model really relearns
        for step in range(1, steps + 1):
            loss = -batch.answer_logprobs(handle).mean()
            loss.backward()                    # an Adam step, one weight at a time (no P-sized gradient)
            if step % every == 0 or step == steps:
                measure(step)
    return RelearnCurve(curve.steps, curve.train, curve.held_out, curve.config, round(time.perf_counter() - t0, 2))
