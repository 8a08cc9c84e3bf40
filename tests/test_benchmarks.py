"""Standard benchmarks from local files in their published formats (fixtures written here:
tests/fixtures/benchmarks/make_fixtures.py), their metrics as the sources define them, and benchmark
files as a recipe's targets."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from repedit.recipes.schema import RecipeError, parse_recipe
from repedit.suites.formats import BenchmarkFormatError, load_benchmark
from repedit.verify.benchmarks import headline, load_reference, score_benchmark
from repedit.verify.benchmarks.text import auc, min_k, normalised_probs, rouge_l

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
AUTHORS = ("Liora Venkataraman-Holt", "Teodor Amsel Brandvik")


@pytest.mark.fast
def test_each_format_loads_with_its_own_fields():
    tofu = load_benchmark("tofu", FIX / "tofu")
    assert (len(tofu.forget), len(tofu.retain)) == (40, 20)
    assert [f.subject for f in tofu.forget] == [AUTHORS[0]] * 20 + [AUTHORS[1]] * 20   # 20 questions per author
    assert set(tofu.items) == {"forget", "retain", "real_authors", "world_facts"}
    item = tofu.items["forget"][0]
    assert len(item["perturbed_answer"]) == 3 and item["paraphrased_answer"] != item["answer"]
    f = tofu.forget[0]
    assert f.forms["qa"] == {"prompt": "Where was Liora Venkataraman-Holt born?", "chat": True}
    assert f.forms["mc"]["options"][f.forms["mc"]["answer_index"]] == f.answer
    assert set(f.forms["mc"]["options"]) == {f.answer, *item["perturbed_answer"]}   # TOFU's own wrong answers

    muse = load_benchmark("muse", FIX / "muse")
    assert (len(muse.forget), len(muse.retain)) == (4, 3)
    assert muse.forget[0].subject == "Velmont" and muse.forget[0].answer == "Ilse Corbin"
    assert {"verbmem", "privleak_forget", "privleak_holdout", "forget_icl"} <= set(muse.items)

    wmdp = load_benchmark("wmdp", FIX / "wmdp")                   # parquet, as published
    w = wmdp.items["forget"][0]
    assert w["domain"] == "wmdp-bio" and w["answer"] == w["choices"][w["answer_index"]] == "The mitochondrion"
    assert sorted(wmdp.forget[0].forms["mc"]["options"]) == sorted(w["choices"])

    cf = load_benchmark("counterfact", FIX / "counterfact.json")
    c = cf.forget[0]
    assert (c.subject, c.answer, c.relation) == ("The Eiffel Tower", "Paris", "P131")
    assert c.forms["blank"]["prompt"] == "The Eiffel Tower is located in the city of"
    assert all(c.subject in spec["prompt"] for spec in c.forms.values())       # ROCR can read the subject
    assert "Rome" in c.forms["mc"]["options"]                                  # the counterfactual is an option

    zs = load_benchmark("zsre", FIX / "zsre.json")
    assert zs.forget[0].forms["paraphrase"]["prompt"] == "In which country is Mount Fuji located?"
    assert zs.items["records"][0]["loc_ans"] == "Jane Austen"


@pytest.mark.fast
def test_parquet_and_json_lines_read_alike(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(line) for line in (FIX / "tofu" / "forget01.json").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "forget01.parquet")
    a, b = load_benchmark("tofu", tmp_path), load_benchmark("tofu", FIX / "tofu")
    assert [f.forms["qa"] for f in a.forget] == [f.forms["qa"] for f in b.forget]
    assert [f.subject for f in a.forget] == [f.subject for f in b.forget]


@pytest.mark.fast
def test_malformed_files_name_file_field_and_fix(tmp_path):
    bad = json.loads((FIX / "counterfact.json").read_text())[:2]
    del bad[1]["requested_rewrite"]["target_new"]
    (tmp_path / "cf.json").write_text(json.dumps(bad))
    with pytest.raises(BenchmarkFormatError, match=r"record 2 .*target_new"):
        load_benchmark("counterfact", tmp_path / "cf.json")
    with pytest.raises(BenchmarkFormatError, match="forget05"):
        load_benchmark("tofu", FIX / "tofu", split="forget05")
    (tmp_path / "zs.json").write_text(json.dumps([{"subject": "x", "src": "q?", "answers": ["a"]}]))
    with pytest.raises(BenchmarkFormatError, match=r"lacks field\(s\) \['rephrase', 'loc', 'loc_ans'\]"):
        load_benchmark("zsre", tmp_path / "zs.json")
    with pytest.raises(Exception, match="did you mean"):
        load_benchmark("counterfacts", FIX / "counterfact.json")


@pytest.mark.fast
def test_select_takes_every_fact_of_a_subject():
    tofu = load_benchmark("tofu", FIX / "tofu")
    forget, rest = tofu.select([AUTHORS[1]])
    assert len(forget) == 20 and {f.subject for f in forget} == {AUTHORS[1]}
    assert len(rest) == 40 and rest[0].subject == AUTHORS[0]
    with pytest.raises(Exception, match="close"):
        tofu.select(["Liora Venkataraman"])


@pytest.mark.fast
def test_rouge_membership_helpers_match_their_definitions():
    r = rouge_l(["the cat sat"], ["the cat sat on the mat"])
    assert r["recall"][0] == pytest.approx(0.5) and r["f1"][0] == pytest.approx(2 * 0.5 / 1.5)
    assert min_k(np.array([-5.0, -1.0, -0.5, -0.1, -3.0]), 0.4) == pytest.approx(-4.0)   # the 2 lowest of 5
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0


def _recipe(extra: str, method: str = "rocr", bench: str = "") -> str:
    return (f'[targets]\n{extra}\nunrelated = 0\n[targets.benchmark]\n{bench}\n[verify]\nknownness = false\n'
            f'[[edit]]\nmethod = "{method}"\n')


@pytest.mark.fast
def test_recipe_schema_checks_the_benchmark():
    cf = f'format = "counterfact"\npath = "{FIX / "counterfact.json"}"'
    r = parse_recipe(_recipe('forget = ["Mount Fuji"]', bench=cf))
    assert r.targets.benchmark["format"] == "counterfact" and Path(r.targets.benchmark["path"]).is_absolute()
    with pytest.raises(RecipeError, match=r":2: .*not a subject"):
        parse_recipe(_recipe('forget = ["Mount Fujii"]', bench=cf))
    with pytest.raises(RecipeError, match=r"format 'tofus' is not one of .*did you mean \['tofu'"):
        parse_recipe(_recipe("", bench=f'format = "tofus"\npath = "{FIX / "tofu"}"'))
    with pytest.raises(RecipeError, match="needs path"):
        parse_recipe(_recipe("", bench='format = "tofu"'))
    tofu = f'format = "tofu"\npath = "{FIX / "tofu"}"'
    assert parse_recipe(_recipe("", "rmu", tofu)).targets.benchmark["split"] == ""   # no forget: the whole split
    with pytest.raises(RecipeError, match="does not contain its subject .*does not read the subject"):
        parse_recipe(_recipe("", "rocr", tofu))         # TOFU questions often say "this author": ROCR refuses


def test_tofu_metrics_follow_the_source(smol):
    bench = load_benchmark("tofu", FIX / "tofu", limit=3)
    state = {}
    m = score_benchmark(smol, bench, state=state, max_new_tokens=6)
    assert m["forget_quality"] is None and m["ks_vs_original_pvalue"] == pytest.approx(1.0)
    it = bench.items["forget"][0]                       # truth ratio of one question, by hand
    p_para = normalised_probs(smol, [it["question"]], [it["paraphrased_answer"]])[0]
    p_pert = normalised_probs(smol, [it["question"]] * 3, it["perturbed_answer"])
    expect = math.exp(np.log(p_pert).mean()) / p_para
    assert m["forget"]["truth_ratios"][0] == pytest.approx(expect, rel=1e-4)   # batches differ: float32 noise
    r = np.array(m["forget"]["truth_ratios"])
    assert m["forget"]["truth_ratio"] == pytest.approx(np.minimum(r, 1 / r).mean())
    nine = [m[k][x] for k in ("retain", "real_authors", "world_facts") for x in ("probability", "rouge_l_recall",
                                                                                  "truth_ratio")]
    assert m["model_utility"] == pytest.approx(len(nine) / sum(1 / v for v in nine) if min(nine) > 0 else 0.0)
    ra = bench.items["real_authors"][0]                 # real authors: P(answer) over answer + wrong answers
    ps = normalised_probs(smol, [ra["question"]] * 3, [ra["answer"], *ra["perturbed_answer"]])
    assert 0 < ps[0] / ps.sum() < 1
    ref = {"model": "itself", "forget": {"truth_ratios": list(r)}}
    again = score_benchmark(smol, bench, state=state, reference=ref, max_new_tokens=6)
    assert again["forget_quality"] == pytest.approx(1.0)   # the same distribution as the "retain model"
    assert set(headline(again)) == {"forget.probability", "forget.rouge_l_recall", "forget.truth_ratio",
                                    "forget_quality", "ks_vs_original_pvalue", "model_utility"}


def test_muse_wmdp_zsre_metrics_on_the_real_model(smol, tmp_path):
    muse = score_benchmark(smol, load_benchmark("muse", FIX / "muse", limit=2), max_new_tokens=8)
    assert 0 <= muse["verbmem_forget"]["rouge_l_f1"] <= 1 and muse["verbmem_forget"]["n"] == 2
    assert muse["privleak"]["reference_auc"] == 0.5 and "no retain model" in muse["privleak"]["reference"]
    assert muse["privleak"]["privleak"] == pytest.approx((muse["privleak"]["auc"] - 0.5) / 0.5 * 100, rel=1e-6)
    (tmp_path / "ref.json").write_text(json.dumps({"benchmark": {"format": "muse", "model": "m",
                                                                 "privleak": {"auc": 0.8}}}))
    ref = load_reference(tmp_path / "ref.json")
    again = score_benchmark(smol, load_benchmark("muse", FIX / "muse", limit=2), reference=ref, max_new_tokens=8)
    assert again["privleak"]["privleak"] == pytest.approx((again["privleak"]["auc"] - 0.8) / 0.8 * 100, rel=1e-6)

    from repedit.verify.benchmarks.editing import wmdp_prompt

    bench = load_benchmark("wmdp", FIX / "wmdp")
    w = score_benchmark(smol, bench)
    assert wmdp_prompt(bench.items["forget"][0]).startswith(
        "The following are multiple choice questions (with answers) about biology.\n\nWhich organelle")
    assert wmdp_prompt(bench.items["forget"][0]).endswith("D. The lysosome\nAnswer:")
    assert w["forget"]["n"] == 6 and w["forget"]["chance"] == 0.25 and 0 <= w["forget"]["accuracy"] <= 1

    state = {}
    z = score_benchmark(smol, load_benchmark("zsre", FIX / "zsre.json", limit=2), state=state)
    assert z["specificity"] == 1.0 and len(state["loc_outputs"]) == 2     # the original model agrees with itself


def test_counterfact_file_as_recipe_targets(smol, tmp_path):
    """The benchmark's metrics land in report.json and report.html next to the five forms; an erasure of
    the facts raises efficacy (a check that fails if the benchmark's answers were not measured)."""
    from repedit.recipes.runner import run_recipe

    text = (f'[targets]\nforget = ["The Eiffel Tower", "Mount Fuji"]\nretain = 2\nneighbours = 0\nunrelated = 0\n'
            f'[targets.benchmark]\nformat = "counterfact"\npath = "{FIX / "counterfact.json"}"\n'
            '[verify]\nforms = ["blank", "paraphrase"]\nperplexity_docs = 0\nknownness = false\n'
            '[attacks]\nprefixes = false\n[[edit]]\nmethod = "rocr"\n')
    (tmp_path / "r.toml").write_text(text)
    rep = run_recipe(tmp_path / "r.toml", tmp_path / "run", progress=False, echo=None).report
    before, after = rep["before"]["benchmark"], rep["edits"]["rocr"]["after"]["benchmark"]
    assert before["format"] == "counterfact" and before["n"] == 2 and before["n_neighbourhood"] == 4
    assert after["efficacy"] > before["efficacy"]
    row = rep["comparison"][0]
    assert row["benchmark_efficacy_after"] == after["efficacy"]
    assert rep["targets"]["benchmark"]["format"] == "counterfact"
    assert "Benchmark: counterfact" in (tmp_path / "run" / "report.html").read_text()


def test_compare_runs_on_a_benchmark_unchanged():
    """`repedit compare --benchmark FORMAT:PATH` builds the same comparison recipe with the benchmark as targets."""
    from repedit.recipes.compare import FACT_METHODS, compare_recipe

    bench = {"format": "counterfact", "path": str(FIX / "counterfact.json"), "split": ""}
    text = compare_recipe([], list(FACT_METHODS), name="c", relearn_steps=0, trace_prompts=0, sae=None, quick=True,
                          seed=0, benchmark=bench)
    r = parse_recipe(text, "<compare>")
    assert r.targets.benchmark["format"] == "counterfact" and r.targets.forget == ()
    assert [e.method for e in r.edits] == list(FACT_METHODS)
    some = parse_recipe(compare_recipe(["Big Ben"], ["rocr"], name="c", relearn_steps=0, trace_prompts=0, sae=None,
                                       quick=True, seed=0, benchmark=bench), "<compare>")
    assert some.targets.forget == ("Big Ben",)
