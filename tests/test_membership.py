"""Membership inference on the toy: memorised sequences are members, a never-trained reference sees
none, gradient ascent hides the unlearned half, and each score matches a direct computation."""

import math
import zlib

import numpy as np
import pytest
import torch

from repedit.errors import InputError
from repedit.verify.membership import SCORES, auc, fact_rows, membership_attack, membership_scores

N = 100   # items per set


@pytest.fixture(scope="module")
def reference():
    import repedit

    return repedit.load("toy:memorise-reference")


@pytest.fixture(scope="module")
def sets(toy):
    s = toy.extras["sequences"]
    return {"memorised": s["memorised"][:N].tolist(), "heldout": s["heldout"][:N].tolist()}


@pytest.fixture(scope="module")
def ref_auc(reference, sets):
    return membership_attack(reference, sets["memorised"], sets["heldout"]).to_dict()["auc"]


@pytest.fixture(scope="module")
def trained(toy, sets, ref_auc):
    return membership_attack(toy, sets["memorised"], sets["heldout"], reference=ref_auc)


def test_memorised_are_members_and_reference_sees_none(toy, sets, trained, ref_auc):
    for s in ("loss", "min_k", "min_k_pp"):
        assert trained.auc[s] >= 0.9, (s, trained.to_dict())
        assert 0.3 <= ref_auc[s] <= 0.7, (s, ref_auc)
        assert trained.privleak[s] > 40, (s, trained.to_dict())    # (≥0.9 − ≤0.7) / ≤0.7 ≥ 28%; in practice ~+100%
        assert trained.privleak[s] == pytest.approx((trained.auc[s] - ref_auc[s]) / ref_auc[s] * 100)
    assert trained.reference == "given" and trained.reference_auc == ref_auc
    plain = membership_attack(toy, sets["memorised"][:8], sets["heldout"][:8])
    assert plain.reference == "none (0.5)" and plain.to_dict()["reference_auc"]["loss"] == 0.5
    assert plain.privleak["loss"] == pytest.approx((plain.auc["loss"] - 0.5) / 0.5 * 100)


def test_gradient_ascent_hides_the_unlearned_half(toy, sets, trained):
    from unlearn_toy import unlearn

    forget = sets["memorised"]                                   # 100 of the 200 memorised sequences
    edited = unlearn(toy, torch.tensor(forget), steps=10, lr=1e-3)
    after = membership_attack(edited, forget, sets["heldout"]).auc
    for s in ("loss", "min_k", "min_k_pp"):
        assert after[s] < trained.auc[s] - 0.15, (s, trained.auc, after)
    assert toy.model is not edited.model


def test_scores_match_a_direct_computation(toy, sets):
    row = sets["memorised"][0][:20]
    k = 0.2
    got = membership_scores(toy, [row], k=k)
    with torch.no_grad():
        logp = torch.log_softmax(toy.model(torch.tensor([row]), return_type="logits")[0].double(), -1)[:-1]
    lp = logp[torch.arange(len(row) - 1), torch.tensor(row[1:])].numpy()
    n = math.ceil(len(lp) * k)                                        # 19 tokens → the 4 lowest
    assert got["loss"][0] == pytest.approx(lp.mean(), abs=1e-5)
    assert got["min_k"][0] == pytest.approx(np.sort(lp)[:n].mean(), abs=1e-5)
    assert got["zlib"][0] == pytest.approx(lp.sum() / len(zlib.compress(bytes(row))), abs=1e-5)
    p = logp.exp().numpy()
    mu = (p * logp.numpy()).sum(-1)
    sigma = np.sqrt((p * logp.numpy() ** 2).sum(-1) - mu ** 2)
    assert got["min_k_pp"][0] == pytest.approx(np.sort((lp - mu) / sigma)[:n].mean(), abs=1e-4)
    assert set(got) == set(SCORES)


@pytest.mark.fast
def test_auc_ranks_and_ties():
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([2.0, 0.0], [1.0, 1.0]) == 0.5
    with pytest.raises(InputError):
        auc([], [1.0])


def test_bad_input_is_refused(toy, sets):
    with pytest.raises(InputError):
        membership_scores(toy, [[5]])
    with pytest.raises(InputError):
        membership_scores(toy, sets["memorised"][:2], k=0.0)
    with pytest.raises(InputError):
        membership_attack(toy, sets["memorised"][:2], sets["heldout"][:2], reference={"loss": 0.5})


def test_fact_rows_are_prompt_space_answer(toy):
    from repedit.suites import Fact

    fact = Fact(id="f", subject="Paris", relation="capital", answer="France", aliases=(),
                forms={"blank": {"prompt": "Paris is the capital of"}}, source="test")
    assert fact_rows(toy, [fact]) == [list(b"Paris is the capital of France")]
