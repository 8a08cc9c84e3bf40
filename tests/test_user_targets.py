"""Targets from anywhere: suites and pools from the user's JSONL/CSV files or inline recipe tables,
forms generated from templates (or generically from the prompt), and the checks before anything loads."""

import csv
import json
from pathlib import Path

import pytest

from repedit.errors import InputError
from repedit.recipes.schema import RecipeError, parse_recipe
from repedit.suites import FORMS, facts_from_records, forms_missing_subject, load_suite
from repedit.suites.build import ADVERSARIAL_PREFIX
from repedit.suites.pools import load_pool, pool_from_records

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

ROOT = Path(__file__).resolve().parents[1]
CITIES = [("Eiffel Tower", "Paris"), ("Colosseum", "Rome"), ("Big Ben", "London"), ("Brandenburg Gate", "Berlin"),
          ("Kremlin", "Moscow"), ("Acropolis", "Athens")]
TEMPLATES = {"landmark": {"qa": "In which city is {s}?", "paraphrase": "{s} stands in the city of",
                          "shot": "{s} is in {a}."}}


def minimal(pairs=CITIES, relation="landmark"):
    """The published minimal record: subject, answer, prompt (+ relation)."""
    return [{"subject": s, "answer": a, "prompt": f"The {s} is in the city of", "relation": relation} for s, a in pairs]


def write_jsonl(path, records, templates=None):
    lines = ([json.dumps({"templates": templates})] if templates else []) + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path, records, columns=("subject", "answer", "prompt", "relation", "aliases")):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in records:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


def check_fact(f):
    assert set(f.forms) == set(FORMS)
    mc = f.forms["mc"]
    assert len(mc["options"]) == 4 and mc["options"][mc["answer_index"]] == f.answer
    assert len(set(mc["options"])) == 4
    assert f.forms["qa"]["chat"] is True and f.forms["blank"]["chat"] is False


def test_jsonl_and_csv_files_load_with_all_five_forms(tmp_path):
    recs = minimal()
    recs[0]["aliases"] = ["Paris, France"]
    js = load_suite(str(write_jsonl(tmp_path / "l.jsonl", recs, TEMPLATES)))
    recs[0]["aliases"] = "Paris, France|City of Light"
    cs = load_suite(str(write_csv(tmp_path / "l.csv", recs)), templates=TEMPLATES)
    for facts in (js, cs):
        assert [f.subject for f in facts] == [s for s, _ in CITIES]
        for f in facts:
            check_fact(f)
            assert f.relation == "landmark" and f.id == f"landmark/{f.subject}" and f.kind == "entity"
            assert f.forms["blank"]["prompt"] == f"The {f.subject} is in the city of"       # the record's prompt
            assert f.forms["qa"]["prompt"] == f"In which city is {f.subject}?"              # from the templates
            assert f.forms["mc"]["prompt"] == f"Question: In which city is {f.subject}?\nAnswer:"
            adv = f.forms["adversarial"]["prompt"]
            assert adv.startswith(ADVERSARIAL_PREFIX) and adv.endswith(f.forms["blank"]["prompt"])
            assert "generated: qa, mc, adversarial, paraphrase" in f.source and "given: blank" in f.source
    assert cs[0].aliases == ("Paris, France", "City of Light") and js[0].aliases == ("Paris, France",)


def test_explicit_forms_win_and_templates_override_the_built_in_relation():
    recs = minimal(relation="capital")
    recs[0]["qa"] = "Which city is home to the Eiffel Tower?"
    recs[1]["mc_options"] = ["Milan", "Naples", "Turin"]
    built_in = facts_from_records(recs)                              # the built-in "capital" templates
    assert built_in[1].forms["qa"]["prompt"] == "What is the capital of Colosseum?"
    assert built_in[1].kind == "country"
    assert built_in[0].forms["qa"] == {"prompt": "Which city is home to the Eiffel Tower?", "chat": True}
    assert built_in[0].forms["mc"]["prompt"] == "Question: Which city is home to the Eiffel Tower?\nAnswer:"
    assert sorted(built_in[1].forms["mc"]["options"]) == ["Milan", "Naples", "Rome", "Turin"]
    over = facts_from_records(recs, {"capital": {"paraphrase": "Visitors of {s} are in"}})
    assert over[1].forms["paraphrase"]["prompt"] == "Visitors of Colosseum are in"     # overridden key
    assert over[1].forms["qa"]["prompt"] == "What is the capital of Colosseum?"       # the rest kept
    recs[2]["templates"] = {"capital": {"qa": "Where is {s}?"}}                      # on a record (JSONL, inline)
    assert facts_from_records(recs)[3].forms["qa"]["prompt"] == "Where is Brandenburg Gate?"
    assert facts_from_records(recs, TEMPLATES | {"capital": {"qa": "Q {s}?"}})[3].forms["qa"]["prompt"] \
        == "Q Brandenburg Gate?"                                                    # the recipe's win


def test_generic_forms_from_the_prompt_without_templates():
    facts = facts_from_records(minimal(relation="where"), origin="mine.csv")
    f = facts[0]
    check_fact(f)
    p = "The Eiffel Tower is in the city of"
    assert f.forms["blank"]["prompt"] == p
    assert f.forms["qa"] == {"prompt": f"Complete the sentence: {p}", "chat": True}
    assert f.forms["paraphrase"]["prompt"] == f"A well-known fact: {p}"
    adv = f.forms["adversarial"]["prompt"]
    shots = adv.removeprefix(ADVERSARIAL_PREFIX).removesuffix(p)
    assert adv.startswith(ADVERSARIAL_PREFIX) and adv.endswith(p) and shots.count(" is in the city of ") == 2
    assert "Paris" not in shots
    assert set(f.forms["mc"]["options"]) - {"Paris"} <= {a for _, a in CITIES}
    assert f.source.startswith("mine.csv; given: blank; generated:") and "generic forms" in f.source


def test_generation_is_deterministic_and_seeded_by_the_content():
    a, b = facts_from_records(minimal()), facts_from_records(minimal())
    assert [f.forms for f in a] == [f.forms for f in b]
    other = facts_from_records(minimal(list(reversed(CITIES))))
    assert [f.forms for f in other] != [f.forms for f in reversed(a)]    # another order, another draw


def test_full_records_load_unchanged():
    full = load_suite("capitals")
    again = facts_from_records([{**vars(f), "aliases": list(f.aliases)} for f in full[:5]])
    assert again == full[:5]


def test_errors_name_the_fact_and_the_fix(tmp_path):
    f = facts_from_records(minimal(relation="where"))[0]
    assert forms_missing_subject(f, FORMS) == []
    recs = minimal(relation="where")
    recs[0]["paraphrase"] = "That famous iron tower is in the city of"
    f = facts_from_records(recs)[0]
    assert forms_missing_subject(f, FORMS) == ["paraphrase"]
    with pytest.raises(InputError, match=r"mc form of 'where/Eiffel Tower' needs 3 other distinct answers in "
                                         r"relation 'where', which has 2.*add facts.*mc_options"):
        facts_from_records(minimal(CITIES[:3], relation="where"))
    with pytest.raises(InputError, match=r"adversarial form .* needs 2 other facts"):
        facts_from_records([{**r, "mc_options": ["A", "B", "C"]} for r in minimal(CITIES[:2], relation="where")])
    # unknown keys and columns are rejected, with the close match (a typo would otherwise drop silently)
    with pytest.raises(InputError, match=r"l.csv:2: unknown column 'anwser'.*did you mean \['answer'"):
        load_suite(str(write_csv(tmp_path / "l.csv", [{"subject": "X", "anwser": "Y", "prompt": "X is"}],
                                 ("subject", "anwser", "prompt"))))
    with pytest.raises(InputError, match=r"l.jsonl:2: missing 'answer'"):
        load_suite(str(write_jsonl(tmp_path / "l.jsonl", [minimal()[0], {"subject": "X", "prompt": "X is"}])))
    with pytest.raises(InputError, match=r"needs templates for \['paraphrase', 'shot'\]"):
        facts_from_records(minimal(), {"landmark": {"qa": "Where is {s}?"}})
    with pytest.raises(InputError, match=r"template shot must be a string holding \{s\} and \{a\}"):
        facts_from_records(minimal(), {"landmark": {**TEMPLATES["landmark"], "shot": "{s}."}})


def recipe(body: str, targets: str = 'forget = ["Eiffel Tower", "Colosseum"]\n', method: str = "rocr") -> str:
    return f'[run]\nname = "t"\n[targets]\n{targets}{body}[[edit]]\nmethod = "{method}"\n'


def test_a_recipe_takes_a_path_suite_relative_to_the_recipe(tmp_path):
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "l.csv", minimal())
    path = tmp_path / "r.toml"
    path.write_text(recipe('[targets.templates.landmark]\nqa = "Where is {s}?"\nparaphrase = "{s} is in"\n'
                           'shot = "{s} is in {a}."\n', 'suite = "data/l.csv"\nforget = ["Eiffel Tower"]\n'))
    from repedit.recipes.schema import load_recipe

    r = load_recipe(path)
    assert r.targets.suite == str((tmp_path / "data" / "l.csv").resolve())
    assert r.targets.templates == {"landmark": {"qa": "Where is {s}?", "paraphrase": "{s} is in",
                                                "shot": "{s} is in {a}."}}
    json.dumps(r.to_dict())
    path.write_text(recipe("", 'suite = "data/missing.csv"\nforget = ["Eiffel Tower"]\n'))
    with pytest.raises(RecipeError, match=r"r.toml:4: \[targets\] suite: no such file .*missing.csv.*valid: a "
                                          r"built-in name or a path"):
        load_recipe(path)


INLINE = "".join(f'[[targets.facts]]\nsubject = "{s}"\nanswer = "{a}"\nprompt = "The {s} is in the city of"\n'
                 f'relation = "where"\n' for s, a in CITIES)


def test_a_recipe_takes_inline_facts_and_checks_subjects_against_them():
    r = parse_recipe(recipe(INLINE), "r.toml")
    assert len(r.targets.facts) == len(CITIES) and r.targets.suite == "" and r.targets.forget[0] == "Eiffel Tower"
    assert json.loads(json.dumps(r.to_dict()))["targets"]["facts"][0]["subject"] == "Eiffel Tower"
    with pytest.raises(RecipeError, match=r"r.toml:4: 'Eifel Tower' is not a subject of the inline facts "
                                          r"\(close: \['Eiffel Tower'"):
        parse_recipe(recipe(INLINE, 'forget = ["Eifel Tower"]\n'), "r.toml")
    with pytest.raises(RecipeError, match=r"r.toml:4: \[\[targets.facts\]\] needs \[targets\] forget"):
        parse_recipe(recipe(INLINE, "", method="pga"), "r.toml")
    # a bad record: the error names its table's line (fact 2 of the recipe)
    bad = INLINE.replace('answer = "Rome"', 'anwser = "Rome"')
    with pytest.raises(RecipeError, match=r"r.toml:12: \[\[targets.facts\]\] 2: unknown key 'anwser'"):
        parse_recipe(recipe(bad), "r.toml")
    with pytest.raises(RecipeError, match=r"both suite and \[\[targets.facts\]\]"):
        parse_recipe(recipe(INLINE, 'suite = "capitals"\nforget = ["Eiffel Tower"]\n'), "r.toml")


def test_a_method_that_reads_the_subject_needs_it_in_every_form():
    bad = INLINE.replace('relation = "where"\n', 'relation = "where"\nqa = "Where is that iron tower?"\n', 1)
    with pytest.raises(RecipeError, match=r"r.toml:5: edit 'rocr' \(rocr\) reads the subject's tokens in every form, "
                                          r"but fact 'where/Eiffel Tower' form 'qa' does not contain its subject "
                                          r"'Eiffel Tower': 'Where is that iron tower\?'"):
        parse_recipe(recipe(bad), "r.toml")
    parse_recipe(recipe(bad + '[verify]\nforms = ["blank", "paraphrase"]\n'), "r.toml")    # qa not measured
    parse_recipe(recipe(bad, method="ga"), "r.toml")                                      # GA reads no subject


def test_pools_from_a_path_and_inline(tmp_path):
    keys = [{"key": f"k{i}", "memorised": f"text {i}", "paraphrase_c": f"c {i}", "paraphrase_b": f"b {i}"}
            for i in range(4)]
    write_jsonl(tmp_path / "p.jsonl", keys)
    write_csv(tmp_path / "p.csv", keys, ("key", "memorised", "paraphrase_c", "paraphrase_b"))
    for name in ("p.jsonl", "p.csv"):
        pool = load_pool(str(tmp_path / name))
        assert [k.key for k in pool.keys] == ["k0", "k1", "k2", "k3"] and pool.keys[1].paraphrase_b == "b 1"
    assert len(pool_from_records(keys)) == 4
    with pytest.raises(InputError, match="at least 3 keys"):
        pool_from_records(keys[:2])
    inline = "".join(f'[[targets.pool_keys]]\nkey = "{k["key"]}"\nmemorised = "{k["memorised"]}"\n'
                     f'paraphrase_c = "c"\nparaphrase_b = "b"\n' for k in keys)
    r = parse_recipe(f"[run]\nname = 't'\n{inline}[[edit]]\nmethod = \"pga\"\n", "r.toml")
    assert r.targets.has_pool and r.targets.pool is None and len(r.targets.pool_keys) == 4
    with pytest.raises(RecipeError, match=r"r.toml:10: \[\[targets.pool_keys\]\] 2: memorised must be"):
        parse_recipe(f"[run]\nname = 't'\n{inline.replace('text 1', '')}[[edit]]\nmethod = \"pga\"\n", "r.toml")
    (tmp_path / "r.toml").write_text('[targets]\npool = "p.csv"\n[[edit]]\nmethod = "pga"\n')
    from repedit.recipes.schema import load_recipe

    assert load_recipe(tmp_path / "r.toml").targets.pool == str((tmp_path / "p.csv").resolve())


def test_references_need_ten_distinct_names():
    names = [f"Zorblax {i}" for i in range(10)]
    r = parse_recipe(recipe(INLINE, f'forget = ["Eiffel Tower"]\nreferences = {json.dumps(names)}\n'), "r.toml")
    assert r.targets.references == tuple(names)
    with pytest.raises(RecipeError, match=r"r.toml:5: \[targets\] references needs at least 10 distinct names"):
        parse_recipe(recipe(INLINE, f'forget = ["Eiffel Tower"]\nreferences = {json.dumps(names[:9] * 2)}\n'),
                     "r.toml")


def test_the_example_recipes_validate():
    from repedit.recipes.schema import load_recipe

    user = load_recipe(ROOT / "recipes" / "user-file.toml")
    assert user.targets.suite.endswith("recipes/data/landmarks.csv")
    facts = load_suite(user.targets.suite, templates=user.targets.templates)
    assert len(facts) >= 12 and all(not forms_missing_subject(f, FORMS) for f in facts)
    inline = load_recipe(ROOT / "recipes" / "inline-facts.toml")
    assert [e.method for e in inline.edits] == ["rocr", "rmu"] and len(inline.targets.facts) >= 10


@pytest.mark.slow      # 8 min on 2 shared cores (5 min CPU): the before/after recall and ROCR's key statistics
def test_a_run_on_inline_facts(tmp_path):
    """End to end on the real model: 2 inline forget facts, a tiny ROCR, nothing else."""
    from repedit.recipes.runner import run_recipe

    text = recipe(INLINE, 'forget = ["Eiffel Tower", "Colosseum"]\nretain = 2\nneighbours = 2\nunrelated = 0\n'
                          'known_only = false\n'
                  '[verify]\nforms = ["blank", "qa"]\nperplexity_docs = 2\nknownness = false\n'
                  '[attacks]\nprefixes = false\n')
    text += "config = { stats_tokens = 2000 }\n"
    path = tmp_path / "inline.toml"
    path.write_text(text)
    res = run_recipe(path, tmp_path / "run", echo=None, progress=False)
    rep = res.report
    assert rep["targets"]["forget"] == ["Eiffel Tower", "Colosseum"] and len(rep["targets"]["neighbours"]) == 2
    row = rep["comparison"][0]
    assert row["edit"] == "rocr" and row["forget_after"] < row["forget_before"]
    resolved = json.loads((res.dir / "resolved.json").read_text())
    assert resolved["recipe"]["targets"]["facts"][0]["subject"] == "Eiffel Tower"
