import json
import random

import pytest

from repedit.errors import InputError, SuiteNotFoundError
from repedit.suites import FORMS, load_suite, load_text
from repedit.verify.perplexity import perplexity
from repedit.verify.recall import recall


@pytest.fixture(scope="module")
def capitals_recall(smol):
    return recall(smol, load_suite("capitals", limit=12), progress=False)


@pytest.mark.fast
def test_suites_have_five_forms_and_provenance():
    for name in ("capitals", "currencies", "state-capitals", "elements", "unknown-entities"):
        facts = load_suite(name)
        assert len(facts) >= 40
        for f in facts:
            assert set(f.forms) == set(FORMS) and f.source
            mc = f.forms["mc"]
            assert mc["options"][mc["answer_index"]] == f.answer and len(set(mc["options"])) == 4


def test_known_facts_are_recalled(capitals_recall):
    forms = capitals_recall.forms
    assert forms["blank"].accuracy >= 0.5
    assert forms["qa"].accuracy >= 0.5
    assert forms["adversarial"].probability > 0.3


def test_made_up_entities_are_not(smol, capitals_recall):
    res = recall(smol, load_suite("unknown-entities", limit=12), forms=["qa", "blank", "adversarial", "paraphrase"],
                 progress=False)
    for form, s in res.forms.items():
        assert s.accuracy <= 0.1, (form, s)
        assert s.probability < capitals_recall.forms[form].probability / 10, form


def test_perplexity_is_low_on_real_text_and_high_on_shuffled(smol):
    docs = load_text("news", "heldout")[:4]
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(d.split(), len(d.split()))) for d in docs]
    real, scrambled = perplexity(smol, docs, max_length=128), perplexity(smol, shuffled, max_length=128)
    assert 5 < real < 80 and scrambled > 3 * real, (real, scrambled)


def test_perplexity_equals_hugging_face_loss_per_document(smol):
    """Batched, padded (only the real tokens unembedded) and scored a chunk of positions at a time, perplexity is
    exp of Hugging Face's own mean loss over all documents' tokens, each document run alone (lengths differ,
    so the batches are padded)."""
    import math

    import torch

    docs = load_text("news", "heldout")[:5]
    nll, count = 0.0, 0
    with torch.no_grad():
        for d in docs:
            ids = torch.tensor([smol.tokenizer.encode(d, add_special_tokens=True)[:256]], device=smol.input_device)
            n = ids.shape[1] - 1
            nll, count = nll + float(smol.model(input_ids=ids, labels=ids).loss) * n, count + n
    got = perplexity(smol, docs, max_length=256, batch_size=2)   # 107..256 tokens
    assert abs(got - math.exp(nll / count)) <= 1e-5 * got, (got, math.exp(nll / count))


@pytest.mark.fast
def test_bad_inputs():
    with pytest.raises(SuiteNotFoundError) as err:
        load_suite("capitols")
    assert "capitals" in str(err.value)
    with pytest.raises(InputError):
        recall(None, [])


def test_recall_result_serialises(capitals_recall):
    d = json.loads(json.dumps(capitals_recall.to_dict()))
    assert set(d["forms"]) == set(FORMS) and d["forms"]["mc"]["chance"] == 0.25


def test_recall_probability_is_recall_without_the_generations(smol, capitals_recall):
    from repedit.verify.recall import recall_probability

    # packed scoring (the monitor's) vs the greedy pass's prefill: float rounding only
    assert recall_probability(smol, load_suite("capitals", limit=12)) == pytest.approx(
        capitals_recall.mean_probability, rel=1e-5)
    assert set(capitals_recall.summary()) == {"forms", "mean_accuracy", "mean_probability"}
    with pytest.raises(InputError, match="forms"):
        recall_probability(smol, load_suite("capitals", limit=2), ["essay"])


def test_recall_probabilities_of_two_sets_in_one_pass_equal_each_alone(smol):
    """The training monitor scores forget and neighbours in one batched pass: each set's number is the one
    `recall_probability` gives it alone (batching changes float rounding only)."""
    from repedit.verify.recall import recall_probabilities, recall_probability

    caps = load_suite("capitals", limit=9)
    sets = [(caps[:3], FORMS), (caps[3:], ["blank", "qa"])]
    together = recall_probabilities(smol, sets)
    alone = [recall_probability(smol, facts, forms) for facts, forms in sets]
    assert together == pytest.approx(alone, rel=1e-5) and together[0] != together[1]


def test_residual_knownness_probe_tells_known_from_invented_entities(smol, capitals_recall):
    """Fitted without an SAE (residual at the middle layer), on entities it never saw."""
    from repedit.sites import Site
    from repedit.suites import unknown_entities
    from repedit.verify.sae_codes import fit_knownness

    known = [f["id"] for f in capitals_recall.per_fact if f["blank"]["correct"]]
    subjects = {f.id: f.subject for f in load_suite("capitals", limit=12)}
    known = [subjects[i] for i in known]
    unknown = unknown_entities()
    clf = fit_knownness(smol, None, known[2:], unknown[4:], site=Site(15, "resid_post"))
    assert clf.cv_accuracy > 0.9
    assert clf.p_known(smol, None, known[:2]).min() > 0.8          # held-out known capitals
    assert clf.p_known(smol, None, unknown[:4]).max() < 0.2        # held-out invented countries
    with pytest.raises(InputError, match="site"):
        fit_knownness(smol, None, known, unknown)


def test_training_monitor_packed_scores_equal_the_batched_scores(smol):
    """The training monitor (`recall_probabilities`) scores every row in one packed forward (each form's prefix
    once, no padding): its numbers equal the prefix-batched scoring of `recall`, multiple choice included."""
    from repedit.forward.packed import Rows, packable
    from repedit.verify.recall import _probabilities

    caps = load_suite("capitals", limit=9)
    sets = [(caps[:3], FORMS), (caps[3:], ["blank", "qa"])]
    assert packable(smol, [Rows([[1, 2]], [[3]])])
    packed, right, _ = _probabilities(smol, sets, 16, packed=True)
    batched, right_b, _ = _probabilities(smol, sets, 16)
    assert packed.keys() == batched.keys() and any(form == "mc" for _, form, _ in packed) and right == right_b
    assert [packed[k] for k in batched] == pytest.approx(list(batched.values()), rel=1e-4)   # fp32 rounding: 2e-5
