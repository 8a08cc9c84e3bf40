"""Unknown references of the right kind (repedit.suites.references): fast, no model."""

import pytest

from repedit.errors import InputError
from repedit.suites import Fact, available_suites, load_suite, unknown_entities
from repedit.suites.references import (
    KINDS,
    MIN_GIVEN,
    canonical_kind,
    frames,
    invented,
    majority_kind,
    references,
)

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

GIVEN = [f"Zyx Person {i}" for i in range(14)]


def _fact(subject, kind, relation="occupation"):
    return Fact(id=f"{relation}/{subject}", subject=subject, relation=relation, answer="x", aliases=(), forms={},
                source="test", kind=kind)


def _builtin_subjects():
    out = set()
    for name in available_suites():
        out |= {f.subject.casefold() for f in load_suite(name) if not f.source.startswith("invented")}
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_invented_names_are_reproducible_distinct_counted_and_never_a_suite_subject(kind):
    names = invented(kind, 120)
    assert names == invented(kind, 120) and names[:30] == invented(kind, 30)      # same seed, same prefix
    assert len(names) == 120 and len({n.casefold() for n in names}) == 120
    assert not {n.casefold() for n in names} & _builtin_subjects()
    assert invented(kind, 120, seed=1) != names
    assert all(n.strip() == n and n for n in names)


def test_country_names_and_frames_are_todays():
    from repedit.edits.sae_align import FRAMES
    from repedit.verify.sae_codes import EVAL_FRAMES

    assert invented("country", 40) == unknown_entities()          # the shipped unknown-entities suite, in order
    assert frames("country").train == FRAMES == (
        "Tell me about {}", "Let me tell you about {}", "Write something about {}",
        "Please answer the question about {}", "Some facts about {}", "An article about {}",
        "We talked about {}", "Everyone knows about {}")
    assert frames("country").measure == EVAL_FRAMES == (
        "Here is what I know about {}", "A short history of {}", "I am writing a travel guide to {}",
        "The government of {}")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kinds_frames_are_disjoint_and_end_with_the_entity(kind):
    fr = frames(kind)
    assert len(fr.train) >= 4 and len(fr.measure) >= 4 and not set(fr.train) & set(fr.measure)
    for f in fr.train + fr.measure:
        assert f.endswith("{}") and f.count("{}") == 1 and f[:-2].strip()      # no entity at position 0


def test_related_kinds_map_onto_kinds():
    assert canonical_kind("state") == canonical_kind("city") == "place"
    assert canonical_kind("film") == canonical_kind("book") == "work"
    assert canonical_kind("company") == "organisation" and canonical_kind("element") == "element"
    assert canonical_kind("spaceship") == canonical_kind(None) == "entity"
    assert frames("state") == frames("place")
    assert majority_kind(["person", "country", "author", "state"]) == ("person", {"person": 2, "country": 1,
                                                                                  "place": 1})


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_measure_references_never_overlap(kind):
    for n_train, n_measure in [(24, 40), (5, 5), (64, 10), (0, 40)]:
        r = references(kind, n_train, n_measure)
        assert len(r.train) == n_train and len(r.measure) == n_measure and r.kind == canonical_kind(kind)
        assert not set(r.train) & set(r.measure)
    # different sizes asked by different callers still never overlap
    assert not set(references(kind, 64, 5).train) & set(references(kind, 5, 80).measure)
    assert references(kind) == references(kind)
    with pytest.raises(InputError):
        references(kind, n_train=65)


def test_given_references_replace_the_invented_and_are_split_the_same_way():
    r = references("person", 24, 40, given=GIVEN)
    assert r.source == "given" and r.train == tuple(GIVEN[:7]) and r.measure == tuple(GIVEN[7:])
    assert not set(r.train) & set(r.measure)
    small = references("person", 3, 3, given=GIVEN + GIVEN)           # duplicates dropped
    assert small.train == tuple(GIVEN[:3]) and small.measure == tuple(GIVEN[7:10])
    with pytest.raises(InputError, match=str(MIN_GIVEN)):
        references("person", given=GIVEN[: MIN_GIVEN - 1])


@pytest.mark.parametrize("given", [(), tuple(GIVEN)])
def test_a_recipes_sae_align_and_knownness_references_never_overlap(given):
    """The real code path: SAE-align's unknowns (repedit.methods) vs the knownness probe's
    negatives and frames (repedit.recipes.measure.resolve), for a person and a country target."""
    from repedit.edits.sae_align import SAEAlignConfig
    from repedit.methods import sae_align_unknown
    from repedit.recipes.measure import knownness_references

    person, country = _fact("Albert Einstein", "person"), load_suite("capitals")[0]
    assert country.kind == "country"
    n = SAEAlignConfig().n_reference
    for fact in (person, country):
        train = sae_align_unknown(fact, given, n)
        probe = knownness_references([fact], given)
        assert len(train) >= 5 and len(probe.names) >= 5 and not set(train) & set(probe.names)
        assert probe.kind == canonical_kind(fact.kind) and probe.frames == frames(fact.kind).measure
        assert not set(probe.frames) & set(frames(fact.kind).train)     # SAE-align's default frames
        if not given:
            assert set(train) <= set(invented(fact.kind, 200)) and set(probe.names) <= set(invented(fact.kind, 200))
    if not given:
        assert sae_align_unknown(country, given, n) == tuple(unknown_entities()[:n])   # capitals: as before
        assert not set(sae_align_unknown(person, given, n)) & set(unknown_entities())
    mixed = knownness_references([person, country, _fact("Marie Curie", "person")], given)
    assert mixed.kind == "person" and mixed.counts == {"person": 2, "country": 1}
    assert set(mixed.to_dict()) >= {"kind", "frames", "references"}
