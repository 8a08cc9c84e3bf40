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

from repedit.errors import InputError
from repedit.forward.generation import batch_order, decode_groups, greedy_batches, keeps_tail_logits
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids
from repedit.models.handle import pad_rows
from repedit.suites import FORMS, Fact
from repedit.suites.answers import mentions_answer


@torch.no_grad()
def greedy(handle, prompts: Sequence[list[int]], max_new_tokens: int = 24, batch_size: int = 16,
           answers: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Greedy continuations (decoded text) of token-id prompts, batched by shared prefix (`generation`):
    prefilled in batches of `batch_size`, decoded in groups of batches (`generation.decode_groups`).

    Rows leave their batch (and the KV cache) when they end, and — given `answers` (aliases per prompt)
    — as soon as their text mentions one of them: whether an answer is mentioned can only turn from no to
    yes as the text grows, so accuracy is that of the full `max_new_tokens` continuation, and the texts
    of rows that named their answer end there."""
    if answers is not None and len(answers) != len(prompts):
        raise InputError("greedy(): give one answer list per prompt (or none)")
    texts: list[str] = [""] * len(prompts)
    for group in greedy_plan(handle, prompts, batch_size):
        for j, text in zip([j for idx in group for j in idx],
                           greedy_group(handle, prompts, group, max_new_tokens, answers)[0]):
            texts[j] = text
    return texts


def greedy_plan(handle, prompts: Sequence[list[int]], batch_size: int,
                answer_ids: Sequence[list[int]] | None = None) -> list[list[list[int]]]:
    """`greedy`'s plan: groups (decoded together) of batches (prefilled together) of prompt indices; with
    `answer_ids`, batches of the prompts followed by their answers (`greedy_scored`)."""
    if answer_ids is None:
        batches = batch_order(prompts, batch_size)
    else:
        from repedit.forward.text import score_plan

        batches = score_plan(prompts, answer_ids, batch_size)
    return decode_groups(batches) if keeps_tail_logits(handle) else [[idx] for idx in batches]


@torch.no_grad()
def greedy_group(handle, prompts: Sequence[list[int]], group: list[list[int]], max_new_tokens: int,
                 answers: Sequence[Sequence[str]] | None = None,
                 answer_ids: Sequence[list[int]] | None = None) -> tuple[list[str], list[float]]:
    """The greedy texts of one group of `greedy_plan`, its batches' rows in order, and (given `answer_ids`)
    the mean log-prob per token of each row's answer after its prompt (else [])."""
    tok = handle.tokenizer
    flat = [j for idx in group for j in idx]
    if keeps_tail_logits(handle):
        done = None if answers is None else (
            lambda k, new: mentions_answer(tok.decode(new, skip_special_tokens=True), answers[flat[k]]))
        new, scores = greedy_batches(handle, [[list(prompts[j]) for j in idx] for idx in group], max_new_tokens,
                                     done, None if answer_ids is None else
                                     [[list(answer_ids[j]) for j in idx] for idx in group])
        return [tok.decode(n, skip_special_tokens=True) for n in new], scores
    scores = [] if answer_ids is None else continuation_logprobs(
        handle, [prompts[j] for j in flat], [answer_ids[j] for j in flat], max(len(flat), 1))
    if not max_new_tokens:
        return [""] * len(flat), scores
    batch = pad_rows([list(prompts[j]) for j in flat], handle.pad_id, side="left", device=handle.input_device)
    width = batch["input_ids"].shape[1]                       # models without the cache/tail forward API
    gen = handle.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=handle.pad_id)
    return [tok.decode(g[width:], skip_special_tokens=True) for g in gen], scores


def greedy_scored(handle, prompts: Sequence[list[int]], answer_ids: Sequence[list[int]], max_new_tokens: int = 24,
                  batch_size: int = 16, answers: Sequence[Sequence[str]] | None = None
                  ) -> tuple[list[str], list[float]]:
    """`greedy` and `continuation_logprobs(prompts, answer_ids)` from one prefill per batch (each prompt is
    run once, followed by its answer; the cache is cut back to the prompt for decoding): the texts and the
    answers' mean log-prob per token. `max_new_tokens=0`: only the log-probs."""
    texts, scores = [""] * len(prompts), [0.0] * len(prompts)
    for group in greedy_plan(handle, prompts, batch_size, answer_ids):
        outs, vals = greedy_group(handle, prompts, group, max_new_tokens, answers, answer_ids)
        for j, text, v in zip([j for idx in group for j in idx], outs, vals):
            texts[j], scores[j] = text, v
    return texts, scores




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


def _probability_rows(handle, sets: Sequence[tuple[Sequence[Fact], Sequence[str]]]):
    """Every multiple-choice (set, "mc", fact) as prompt + option rows (one per option), and every free-text
    (set, form, fact) as (key, prompt, answer ids, answer aliases)."""
    rows, owner, free = [], [], []
    for s, (facts, forms) in enumerate(sets):
        for form in forms:
            for k, f in enumerate(facts):
                spec = f.forms[form]
                chat = spec["chat"] and form != "mc"
                p = prompt_ids(handle, spec["prompt"], chat)
                if form == "mc":
                    for opt in spec["options"]:
                        rows.append((p, answer_ids(handle, opt, chat)))
                        owner.append((s, form, k))
                else:
                    free.append(((s, form, k), p, answer_ids(handle, f.answer, chat), f.answers))
    return rows, owner, free


@torch.no_grad()
def _packed_logprobs(handle, rows: list, owner: list, free: list) -> list[float] | None:
    """The mean answer log-prob of every multiple-choice row then every free-text row (`_probability_rows`'
    order) from one `PackedFacts` forward — each (set, form)'s rows share their prompt prefix once, no
    padding, only answer positions unembedded; None where the model does not pack."""
    from repedit.forward.packed import Rows, packed_logprobs

    flat = [(key[:2], p, c) for key, (p, c) in zip(owner, rows)] + [(key[:2], p, a) for key, p, a, _ in free]
    members: dict[tuple, list[int]] = {}
    for i, (group, _, _) in enumerate(flat):
        members.setdefault(group, []).append(i)
    values = packed_logprobs(handle, [Rows([flat[i][1] for i in idx], [flat[i][2] for i in idx])
                                      for idx in members.values()])
    if values is None:
        return None
    out = [0.0] * len(flat)
    for i, v in zip((i for idx in members.values() for i in idx), values):
        out[i] = v
    return out


def _probabilities(handle, sets, batch_size: int, score=None, generate=None,
                   max_new_tokens: int = 0, packed: bool = False) -> tuple[dict, dict, dict]:
    """{(set, form, fact): answer probability}, {(set, "mc", fact): argmax is right} and {(set, form, fact):
    greedy text} (free-text forms; "" when `max_new_tokens` is 0). Multiple-choice options are scored in one
    batched pass (`score(prompts, continuations, batch_size)`, default `continuation_logprobs`); free-text
    answers are scored by the prefill their greedy generation starts from (`generate(prompts, answer_ids,
    max_new_tokens, batch_size, answers)` -> (texts, log-probs), default `greedy_scored`). `packed` (scores only,
    `max_new_tokens` 0): every row from one packed forward (`_packed_logprobs`) where the model packs."""
    rows, owner, free = _probability_rows(handle, sets)
    both = _packed_logprobs(handle, rows, owner, free) if packed and not max_new_tokens else None
    if both is not None:
        lps, outs, free_lps = both[: len(rows)], [""] * len(free), both[len(rows):]
    else:
        score = score or (lambda p, c, size: continuation_logprobs(handle, p, c, size))
        generate = generate or (lambda p, a, n, size, answers: greedy_scored(handle, p, a, n, size, answers))
        lps = score([r[0] for r in rows], [r[1] for r in rows], batch_size) if rows else []
        outs, free_lps = generate([p for _, p, _, _ in free], [a for _, _, a, _ in free], max_new_tokens,
                                  batch_size, [a for *_, a in free]) if free else ([], [])
    grouped: dict[tuple, list[float]] = {}
    for key, lp in zip(owner, lps):
        grouped.setdefault(key, []).append(lp)
    probs, right = {}, {}
    for (s, form, k), vals in grouped.items():
        gold = sets[s][0][k].forms["mc"]["answer_index"]
        scores = torch.tensor(vals, device="cpu")
        probs[(s, form, k)] = float(torch.softmax(scores, 0)[gold])
        right[(s, form, k)] = int(scores.argmax()) == gold
    for (key, *_), lp in zip(free, free_lps):
        probs[key] = math.exp(lp)
    return probs, right, {key: text for (key, *_), text in zip(free, outs)}


def recall_sets(handle, sets: Sequence[tuple[Sequence[Fact], Sequence[str]]], *, max_new_tokens: int = 24,
                batch_size: int = 16, progress: bool = True, score=None, generate=None) -> list[RecallResult]:
    """`recall` of several (facts, forms) sets at once: the options of every multiple-choice prompt scored in
    one batched pass, every free-text prompt scored and generated in one early-stopping greedy pass. One
    RecallResult per set. `score` / `generate` replace `continuation_logprobs` / `greedy_scored` (same
    arguments; e.g. split over ranks)."""
    for facts, forms in sets:
        _check(facts, forms)
    probs, right, texts = _probabilities(handle, sets, batch_size, score, generate, max_new_tokens)
    results = []
    for s, (facts, forms) in enumerate(sets):
        per_fact = [{"id": f.id, "answer": f.answer} for f in facts]
        scores: dict[str, FormScore] = {}
        for form in forms:
            ps = [probs[(s, form, k)] for k in range(len(facts))]
            if form == "mc":
                oks = [right[(s, form, k)] for k in range(len(facts))]
                for k in range(len(facts)):
                    per_fact[k][form] = {"correct": oks[k], "probability": ps[k]}
                chance = 1 / len(facts[0].forms[form]["options"])
            else:
                oks = [mentions_answer(texts[(s, form, k)], f.answers) for k, f in enumerate(facts)]
                for k in range(len(facts)):
                    per_fact[k][form] = {"correct": oks[k], "probability": ps[k], "output": texts[(s, form, k)]}
                chance = None
            scores[form] = FormScore(sum(oks) / len(facts), sum(ps) / len(facts), len(facts), chance=chance)
        results.append(RecallResult(model=handle.id, forms=scores, per_fact=per_fact))
    return results


def recall(handle, facts: Sequence[Fact], forms: Sequence[str] = FORMS, *, max_new_tokens: int = 24,
           batch_size: int = 16, progress: bool = True) -> RecallResult:
    """Measure each fact in each requested form; see the module docstring for the metrics."""
    return recall_sets(handle, [(facts, forms)], max_new_tokens=max_new_tokens, batch_size=batch_size,
                       progress=progress)[0]


def recall_probability(handle, facts: Sequence[Fact], forms: Sequence[str] = FORMS, *, batch_size: int = 16) -> float:
    """`recall(...).mean_probability` without the greedy generations (a cheap monitor for training loops)."""
    return recall_probabilities(handle, [(facts, forms)], batch_size=batch_size)[0]


def recall_probabilities(handle, sets: Sequence[tuple[Sequence[Fact], Sequence[str]]], *,
                         batch_size: int = 16) -> list[float]:
    """`recall_probability` of several (facts, forms) sets, every prompt of every set in one forward (packed:
    each set's form's shared prefix once, no padding; models that do not pack: batched by shared prefix)."""
    for facts, forms in sets:
        _check(facts, forms)
    probs = _probabilities(handle, sets, batch_size, packed=True)[0]         # max_new_tokens=0: scored only
    out = []
    for s, (facts, forms) in enumerate(sets):
        per_form = [sum(probs[(s, form, k)] for k in range(len(facts))) / len(facts) for form in forms]
        out.append(sum(per_form) / len(forms))  # the same order of sums as RecallResult.mean_probability
    return out




def known_facts(handle, facts: Sequence[Fact], form: str = "blank", max_new_tokens: int = 12) -> list[Fact]:
    """The facts whose greedy answer in `form` is correct (the model 'knows' them)."""
    res = recall(handle, facts, forms=[form], max_new_tokens=max_new_tokens, progress=False)
    return [f for f, d in zip(facts, res.per_fact) if d[form]["correct"]]
