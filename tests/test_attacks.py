"""The recipe attacks' fast paths compute what their plain versions compute (real model, real facts)."""

import math

import pytest
import torch

from repedit.suites import load_suite


def test_prefix_attack_in_one_pass_equals_scoring_and_generating_each_variant(smol):
    """`prefix_attack` scores and generates every variant's prompts from one prefill each (generation stops
    once the answer is named): the probabilities of `continuation_logprobs` and the accuracy of the full
    greedy continuation, variant by variant."""
    from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids
    from repedit.suites.answers import mentions_answer
    from repedit.verify.prompt_attacks import _prompts, prefix_attack
    from repedit.verify.recall import greedy

    caps = load_suite("capitals", limit=8)
    facts, hints = caps[:4], caps[4:]
    got = prefix_attack(smol, facts, hints, max_new_tokens=12).to_dict()
    variants = _prompts(facts, hints, 3)
    assert set(got) == set(variants) | {"best-of"} and "in-context" in got
    probs, accs = [], []
    for name, texts in variants.items():
        ids = [prompt_ids(smol, t, False) for t in texts]
        answers = [answer_ids(smol, f.answer, False) for f in facts]
        p = [math.exp(lp) for lp in continuation_logprobs(smol, ids, answers)]
        a = [float(mentions_answer(o, f.answers)) for o, f in zip(greedy(smol, ids, 12), facts)]
        assert got[name]["probability"] == pytest.approx(sum(p) / len(p), rel=1e-4), name
        assert got[name]["accuracy"] == sum(a) / len(a), name
        probs.append(p)
        accs.append(a)
    assert got["best-of"]["accuracy"] == sum(map(max, zip(*accs))) / len(facts)
    assert 0 < got["best-of"]["accuracy"] and got["best-of"]["probability"] == pytest.approx(
        sum(map(max, zip(*probs))) / len(facts), rel=1e-4)


def test_trace_features_read_the_last_token_as_a_full_forward_does(smol):
    """Trace detection's features unembed only each prompt's last token: the log-probs a full forward gives
    there (prompts of different lengths, right-padded)."""
    from repedit.forward.capture import select_positions
    from repedit.verify.prompt_attacks import trace_features

    prompts = ["The weather today is", "In 1905, Albert Einstein published a paper on the photoelectric", "Cats"]
    feats, vocab = trace_features(smol, prompts, k=32)
    b = smol.encode(prompts)
    with torch.no_grad():
        full = torch.log_softmax(select_positions(smol.logits(b["input_ids"], b["attention_mask"]),
                                                  b["attention_mask"], -1).float(), -1)
    assert feats.shape == (3, 32)
    torch.testing.assert_close(torch.from_numpy(feats), full[:, vocab], rtol=1e-4, atol=1e-4)
