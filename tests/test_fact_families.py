"""The families beyond countries: their builders read the published formats (WordNet 3.0 data.noun, the
word2vec analogy file) from small fixtures, and the shipped suites are well formed."""

import pytest

from repedit.errors import InputError
from repedit.suites import FORMS, forms_missing_subject, load_suite
from repedit.suites.build import people_occupations, us_city_states

# WordNet 3.0 data.noun lines: offset lexfile pos word-count (word lex_id)… ptr-count (sym offset pos src/tgt)… | gloss
OCCUPATIONS = {"10000001": "composer", "10000002": "painter", "10000003": "physicist", "10000004": "poet",
               "10000005": "pianist"}
PEOPLE = [("20000001", ["Mozart", "Wolfgang_Amadeus_Mozart"], ["10000001", "10000005"]),
          ("20000002", ["Monet", "Claude_Monet"], ["10000002"]),
          ("20000003", ["Einstein", "Albert_Einstein"], ["10000003"]),
          ("20000004", ["Keats", "John_Keats"], ["10000004"]),
          ("20000005", ["Aristotle"], ["10000003"])]


def _line(offset, lexfile, words, instance_of=()):
    ws = " ".join(f"{w} 0" for w in words)
    ptrs = " ".join(f"@i {o} n 0000" for o in instance_of)
    return f"{offset} {lexfile:02d} n {len(words):02x} {ws} {len(instance_of):03d} {ptrs} | a gloss"


def test_people_from_wordnet_data_noun(tmp_path):
    lines = ["  1 This software and database is being provided ..."]       # licence header lines start with 2 spaces
    lines += [_line(o, 18, [w]) for o, w in OCCUPATIONS.items()]
    lines += [_line(o, 18, ws, inst) for o, ws, inst in PEOPLE]
    (tmp_path / "data.noun").write_text("\n".join(lines) + "\n", encoding="latin-1")
    facts = people_occupations(wordnet=tmp_path)
    by = {f["subject"]: f for f in facts}
    mozart = by["Wolfgang Amadeus Mozart"]
    assert mozart["answer"] == "composer" and mozart["aliases"] == ["pianist"]
    assert by["Aristotle"]["answer"] == "physicist"                 # a single-lemma name is kept as it is
    assert all(f["kind"] == "person" and set(f["forms"]) == set(FORMS) for f in facts)
    assert [f["answer"] for f in facts[:4]] == ["composer", "painter", "physicist", "poet"]   # interleaved
    with pytest.raises(InputError, match="WORDNET_DIR"):
        people_occupations(wordnet=tmp_path / "missing")


def test_cities_from_the_analogy_file(tmp_path):
    path = tmp_path / "questions-words.txt"
    path.write_text(": capital-common-countries\nAthens Greece Baghdad Iraq\n: city-in-state\n"
                    "Chicago Illinois Houston Texas\nChicago Illinois Denver Colorado\nBoston Massachusetts Miami "
                    "Florida\n: currency\nAlgeria dinar Angola kwanza\n")
    facts = us_city_states(path)
    assert [(f["subject"], f["answer"]) for f in facts] == [("Chicago", "Illinois"), ("Houston", "Texas"),
                                                             ("Denver", "Colorado"), ("Boston", "Massachusetts"),
                                                             ("Miami", "Florida")]
    assert facts[0]["forms"]["blank"]["prompt"] == "Chicago is a city in the state of"
    (tmp_path / "empty.txt").write_text(": currency\nAlgeria dinar Angola kwanza\n")
    with pytest.raises(InputError, match="city-in-state"):
        us_city_states(tmp_path / "empty.txt")


@pytest.mark.parametrize("suite,kind", [("people-occupations", "person"), ("us-cities", "place")])
def test_shipped_families_are_well_formed(suite, kind):
    facts = load_suite(suite)
    known = load_suite(f"{suite}.known-smollm2-135m")
    assert all(f.kind == kind for f in facts + known)
    assert {f.id for f in known} <= {f.id for f in facts} and len(known) >= 20
    assert not [f.id for f in facts if forms_missing_subject(f, ("qa", "blank", "paraphrase", "adversarial"))]
