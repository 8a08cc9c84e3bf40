"""The one rule for whether a generated text gives a fact's answer."""

from __future__ import annotations

from collections.abc import Sequence


def mentions_answer(text: str, answers: Sequence[str]) -> bool:
    """True when one of `answers` (the answer or an alias) appears, case-insensitively, in `text`: the greedy
    accuracy of recall, the prefix attack and the benchmarks all use this rule."""
    low = text.lower()
    return any(a.lower() in low for a in answers if a)
