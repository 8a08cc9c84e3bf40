"""Benchmark items → repedit facts with five forms made from the benchmark's own fields.

Question items (TOFU, MUSE knowledge QA, WMDP, ZsRE): qa = the question (chat template); blank =
"Question: …\\nAnswer:"; paraphrase = the benchmark's paraphrased question (chat) when it has one, else
"Answer briefly: …" (chat); mc = the blank prompt scored over the answer and up to 3 wrong options (the
benchmark's own perturbed answers / choices, else other items' answers); adversarial = the
permission prefix + two other items as solved shots + the blank prompt.
Statement items (CounterFact): blank = the rewrite prompt; qa = "Complete the sentence: …" (chat);
paraphrase = the first paraphrase prompt; mc over the true answer, the counterfactual one and two other
answers; adversarial = prefix + two other statements completed + the blank prompt.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from repedit.suites import Fact
from repedit.suites.build import ADVERSARIAL_PREFIX


def _rng(*parts: str) -> random.Random:
    return random.Random(int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16], 16))


def _mc(prompt: str, answer: str, wrong: Sequence[str], rng: random.Random) -> dict:
    options = [answer] + [w for w in dict.fromkeys(wrong) if w and w.strip().lower() != answer.strip().lower()][:3]
    rng.shuffle(options)
    return {"prompt": prompt, "chat": False, "options": options, "answer_index": options.index(answer)}


def _others(i: int, n: int, rng: random.Random, k: int = 2) -> list[int]:
    pool = [j for j in range(n) if j != i]
    return rng.sample(pool, min(k, len(pool)))


def question_facts(items: Sequence[dict], fmt: str, relation: str, kind: str = "entity") -> list[Fact]:
    """Facts from question items: each dict has id, subject, question, answer and optionally
    `paraphrased_question`, `wrong` (wrong options), `aliases`, `source`."""
    facts = []
    for i, it in enumerate(items):
        q, a = it["question"].strip(), it["answer"].strip()
        rng = _rng(fmt, it["id"], q)
        blank = f"Question: {q}\nAnswer:"
        wrong = list(it.get("wrong") or ())
        if len(wrong) < 3:                                   # other items' answers as the remaining options
            extra = [items[j]["answer"].strip() for j in _others(i, len(items), rng, 6)]
            wrong += [w for w in extra if w.lower() != a.lower()]
        shots = "".join(f"Question: {items[j]['question'].strip()}\nAnswer: {items[j]['answer'].strip()}\n\n"
                        for j in _others(i, len(items), rng))
        para = it.get("paraphrased_question")
        forms = {"qa": {"prompt": q, "chat": True}, "blank": {"prompt": blank, "chat": False},
                 "mc": _mc(blank, a, wrong, rng), "adversarial": {"prompt": ADVERSARIAL_PREFIX + shots + blank,
                                                                  "chat": False},
                 "paraphrase": {"prompt": para.strip() if para else f"Answer briefly: {q}", "chat": True}}
        facts.append(Fact(it["id"], it["subject"], relation, a, tuple(it.get("aliases") or ()), forms,
                          it.get("source", fmt), kind))
    return facts


def statement_facts(items: Sequence[dict], fmt: str, kind: str = "entity") -> list[Fact]:
    """Facts from statement items: each dict has id, subject, relation, prompt (the subject filled in),
    answer, and optionally `paraphrase`, `wrong`, `aliases`, `source`."""
    facts = []
    for i, it in enumerate(items):
        p, a = it["prompt"].strip(), it["answer"].strip()
        rng = _rng(fmt, it["id"], p)
        wrong = list(it.get("wrong") or ())
        near = sorted(_others(i, len(items), rng, len(items)), key=lambda j: items[j]["relation"] != it["relation"])
        wrong += [w for w in (items[j]["answer"].strip() for j in near) if w.lower() != a.lower()]
        shots = " ".join(f"{items[j]['prompt'].strip()} {items[j]['answer'].strip()}."
                         for j in _others(i, len(items), rng))
        forms = {"qa": {"prompt": f"Complete the sentence: {p}", "chat": True}, "blank": {"prompt": p, "chat": False},
                 "mc": _mc(p, a, wrong, rng),
                 "adversarial": {"prompt": f"{ADVERSARIAL_PREFIX}{shots} {p}", "chat": False},
                 "paraphrase": {"prompt": (it.get("paraphrase") or f"A well-known fact: {p}").strip(), "chat": False}}
        facts.append(Fact(it["id"], it["subject"], it["relation"], a, tuple(it.get("aliases") or ()), forms,
                          it.get("source", fmt), kind))
    return facts
