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


def test_bad_inputs():
    with pytest.raises(SuiteNotFoundError) as err:
        load_suite("capitols")
    assert "capitals" in str(err.value)
    with pytest.raises(InputError):
        recall(None, [])


def test_recall_result_serialises(capitals_recall):
    d = json.loads(json.dumps(capitals_recall.to_dict()))
    assert set(d["forms"]) == set(FORMS) and d["forms"]["mc"]["chance"] == 0.25
