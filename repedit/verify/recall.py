"""What the model knows: greedy accuracy and length-normalised answer probability per form.

- Question forms (`chat: true`) are asked in the model's chat template when it has one.
- Answer probability = exp(mean log-prob of the answer tokens) right after the prompt.
- Multiple choice is scored lm-eval style: the option with the highest mean log-prob as a
  continuation wins; its "probability" is the softmax of those scores over the options, and the
  chance level (1 / #options) is reported beside it.
- Greedy accuracy: the answer (or an alias) appears, case-insensitively, in the greedy
  continuation of `max_new_tokens` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.handle import pad_rows
from ..suites import FORMS, Fact
from ..text import answer_ids, continuation_logprobs, prompt_ids


@torch.no_grad()
def greedy(handle, prompts: Sequence[list[int]], max_new_tokens: int = 24, batch_size: int = 16) -> list[str]:
    """Greedy continuations (decoded text) of token-id prompts, batched with left padding."""
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = pad_rows(list(prompts[i: i + batch_size]), handle.pad_id, side="left",
                         device=handle.input_device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        width = ids.shape[1]
        gen = handle.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=handle.pad_id)
        texts.extend(handle.tokenizer.decode(g[width:], skip_special_tokens=True) for g in gen)
    return texts


def _mentions(text: str, answers: Sequence[str]) -> bool:
    low = text.lower()
    return any(a.lower() in low for a in answers if a)


@dataclass(frozen=True)
class FormScore:
    accuracy: float          # greedy accuracy (mc: argmax accuracy)
    probability: float       # mean length-normalised answer probability
    n: int
    chance: float | None = None


@dataclass(frozen=True)
class RecallResult:
    """Recall of one suite: per-form summary and per-fact detail."""

    model: str
    forms: dict[str, FormScore]
    per_fact: list[dict] = field(repr=False)

    @property
    def mean_accuracy(self) -> float:
        return sum(f.accuracy for f in self.forms.values()) / len(self.forms)

    @property
    def mean_probability(self) -> float:
        return sum(f.probability for f in self.forms.values()) / len(self.forms)

    def to_dict(self) -> dict:
        return {"model": self.model, "forms": {k: asdict(v) for k, v in self.forms.items()},
                "mean_accuracy": self.mean_accuracy, "mean_probability": self.mean_probability,
                "per_fact": self.per_fact}

    def summary(self) -> dict:
        """Per-form accuracy and probability and their means (`to_dict` without the per-fact detail)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("model", "per_fact")}


def _check(facts: Sequence[Fact], forms: Sequence[str]) -> None:
    if not facts:
        raise InputError("recall() needs at least one fact (load one with repedit.suites.load_suite)")
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise InputError(f"unknown forms {bad}; valid forms: {list(FORMS)}")


def _form_scores(handle, facts: Sequence[Fact], form: str, batch_size: int) -> tuple[list[float], list]:
    """Per-fact answer probability in `form`, and what decides correctness: the argmax-is-right flags
    (mc) or the prompts to continue greedily (free-text forms)."""
    specs = [f.forms[form] for f in facts]
    if form == "mc":
        prompts, conts, owner = [], [], []
        for k, spec in enumerate(specs):
            p = prompt_ids(handle, spec["prompt"], False)
            for opt in spec["options"]:
                prompts.append(p)
                conts.append(answer_ids(handle, opt, False))
                owner.append(k)
        lps = continuation_logprobs(handle, prompts, conts, batch_size)
        probs, right = [], []
        for k, spec in enumerate(specs):
            mine = torch.tensor([lp for lp, o in zip(lps, owner) if o == k], device="cpu")
            probs.append(float(torch.softmax(mine, 0)[spec["answer_index"]]))
            right.append(int(mine.argmax()) == spec["answer_index"])
        return probs, right
    prompts = [prompt_ids(handle, s["prompt"], s["chat"]) for s in specs]
    conts = [answer_ids(handle, f.answer, s["chat"]) for f, s in zip(facts, specs)]
    return [math.exp(lp) for lp in continuation_logprobs(handle, prompts, conts, batch_size)], prompts


def recall(handle, facts: Sequence[Fact], forms: Sequence[str] = FORMS, *, max_new_tokens: int = 24,
           batch_size: int = 16, progress: bool = True) -> RecallResult:
    """Measure each fact in each requested form; see the module docstring for the metrics."""
    _check(facts, forms)
    per_fact = [{"id": f.id, "answer": f.answer} for f in facts]
    scores: dict[str, FormScore] = {}
    for form in tqdm(forms, disable=not progress, desc="recall forms"):
        probs, decide = _form_scores(handle, facts, form, batch_size)
        if form == "mc":
            for k, (p, ok) in enumerate(zip(probs, decide)):
                per_fact[k][form] = {"correct": ok, "probability": p}
            chance = 1 / len(facts[0].forms[form]["options"])
            scores[form] = FormScore(sum(decide) / len(facts), sum(probs) / len(facts), len(facts), chance=chance)
            continue
        outs = greedy(handle, decide, max_new_tokens, batch_size)
        oks = [_mentions(text, f.answers) for f, text in zip(facts, outs)]
        for k, (p, ok, text) in enumerate(zip(probs, oks, outs)):
            per_fact[k][form] = {"correct": ok, "probability": p, "output": text}
        scores[form] = FormScore(sum(oks) / len(facts), sum(probs) / len(facts), len(facts))
    return RecallResult(model=handle.id, forms=scores, per_fact=per_fact)


def recall_probability(handle, facts: Sequence[Fact], forms: Sequence[str] = FORMS, *, batch_size: int = 16) -> float:
    """`recall(...).mean_probability` without the greedy generations (a cheap monitor for training loops)."""
    _check(facts, forms)
    return sum(sum(_form_scores(handle, facts, form, batch_size)[0]) / len(facts) for form in forms) / len(forms)


def answer_logprobs(handle, facts: Sequence[Fact], forms: Sequence[str] = ("blank", "paraphrase", "adversarial"),
                    writes: dict | None = None, batch_size: int = 16) -> torch.Tensor:
    """Length-normalised answer log-prob of each fact, averaged over `forms` (no mc): [n_facts]."""
    if "mc" in forms:
        raise InputError("answer_logprobs() scores free-text forms; leave out 'mc'")
    prompts, conts = [], []
    for form in forms:
        for f in facts:
            spec = f.forms[form]
            prompts.append(prompt_ids(handle, spec["prompt"], spec["chat"]))
            conts.append(answer_ids(handle, f.answer, spec["chat"]))
    lps = torch.tensor(continuation_logprobs(handle, prompts, conts, batch_size, writes=writes), device="cpu")
    return lps.view(len(forms), len(facts)).mean(0)


def known_facts(handle, facts: Sequence[Fact], form: str = "blank", max_new_tokens: int = 12) -> list[Fact]:
    """The facts whose greedy answer in `form` is correct (the model 'knows' them)."""
    res = recall(handle, facts, forms=[form], max_new_tokens=max_new_tokens, progress=False)
    return [f for f, d in zip(facts, res.per_fact) if d[form]["correct"]]
