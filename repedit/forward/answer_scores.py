"""Length-normalised answer log-probabilities of facts, every form packed into one forward."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from repedit.errors import InputError
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids
from repedit.suites import Fact


def answer_logprobs(handle, facts: Sequence[Fact], forms: Sequence[str] = ("blank", "paraphrase", "adversarial"),
                    writes: dict | None = None, batch_size: int = 16) -> torch.Tensor:
    """Length-normalised answer log-prob of each fact, averaged over `forms` (no mc): [n_facts]."""
    if "mc" in forms:
        raise InputError("answer_logprobs() scores free-text forms; leave out 'mc'")
    from repedit.forward.packed import Rows, packed_logprobs

    prompts, conts = [], []
    for form in forms:
        for f in facts:
            spec = f.forms[form]
            prompts.append(prompt_ids(handle, spec["prompt"], spec["chat"]))
            conts.append(answer_ids(handle, f.answer, spec["chat"]))
    n = len(facts)                       # without rewrites: every form's rows in one packed forward
    packed = None if writes else packed_logprobs(handle, [Rows(prompts[i: i + n], conts[i: i + n])
                                                          for i in range(0, len(prompts), n)])
    lps = torch.tensor(packed if packed is not None else
                       continuation_logprobs(handle, prompts, conts, batch_size, writes=writes), device="cpu")
    return lps.view(len(forms), len(facts)).mean(0)
