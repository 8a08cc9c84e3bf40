"""Recipes: strict validation before any compute, and a real run that writes a reproducible run directory."""

import json
from pathlib import Path

import pytest
import torch

from repedit.methods import METHODS, method_config
from repedit.recipes.schema import RecipeError, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
HEAD = '[run]\nname = "t"\n[targets]\nforget = ["France", "Japan"]\n'


@pytest.mark.parametrize("text, line, words", [
    (HEAD + '[[edit]]\nmethod = "rcor"\n', 6, ["unknown method 'rcor'", "rocr"]),
    (HEAD + '[[edit]]\nmethod = "ga"\nconfig = { stepz = 3 }\n', 7, ["no field 'stepz'", "steps"]),
    (HEAD + '[[edit]]\nmethod = "ga"\nconfig = { steps = 0 }\n', 7, ["steps >= 1"]),
    (HEAD + '[[edit]]\nmethod = "ga"\nsteps = 3\n', 7, ["unknown key 'steps'", "config = {...}"]),
    (HEAD + '[[edit]]\nmethod = "ga"\n[[edit]]\nmethod = "rocr"\n[[edit]]\nmethod = "pga"\n', 10,
     ["memorised pool", 'pool = "natural"']),
    ('[run]\nname = "t"\n[targest]\nforget = ["France"]\n', 3, ["unknown section [targest]", "targets"]),
    ('[targets]\nforget = ["Frnace"]\n[[edit]]\nmethod = "ga"\n', 2, ["'Frnace'", "France"]),
    ('[targets]\nsuite = "capitols"\nforget = ["France"]\n', 2, ["not a suite", "capitals"]),
    (HEAD + '[[edit]]\nmethod = "ga"\n[attacks]\nrelearn_steps = "ten"\n', 8, ["relearn_steps must be int"]),
    (HEAD + '[edit]\nmethod = "ga"\n', 5, ["[[edit]]"]),
    (HEAD + '[[edit]]\nmethod = "ga"\n[attacks]\nquantisation = ["int3"]\n', 8, ["unknown quantisation scheme",
                                                                          "int4-g<group>"]),
    (HEAD + '[[edit]]\nmethod = "ga"\n[attacks]\nweight_diff_k = 0\n', 8, ["weight_diff_k must be >= 1"]),
    ('[run]\nname = "t"\n[targets]\npool = "natural"\n[[edit]]\nmethod = "pga"\n[attacks]\nremind = true\n', 8,
     ["remind attack fact targets", "forget"]),
    (HEAD + '[[edit]]\nmethod = "ga"\n[export]\nedit = "rocr"\n', 8, ["not one of the edits"]),
    ('[run]\nname = "a b"\n', 2, ["letters, digits"]),
    ('[run\nname = "t"\n', None, ["not valid TOML", "line 1"]),
])
@pytest.mark.fast
def test_invalid_recipes_name_the_line_and_the_fix(text, line, words):
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, "r.toml")
    msg = str(err.value)
    assert msg.startswith(f"r.toml:{line}:" if line else "r.toml:"), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.fast
def test_shipped_recipes_validate_and_every_method_has_a_valid_default():
    shipped = sorted((ROOT / "recipes").glob("*.toml"))
    assert shipped
    covered = set()
    for path in shipped:
        recipe = load_recipe(path)
        covered |= {e.method for e in recipe.edits}
    assert covered == set(METHODS), set(METHODS) - covered        # an example recipe for each method
    for name in METHODS:
        method_config(name, {})


def _tiny(tmp_path, seed=0, export=True):
    text = f"""[run]
name = "tiny"
seed = {seed}
[targets]
forget = ["France", "Japan"]
retain = ["Germany", "Italy", "Spain"]
neighbours = 2
unrelated = 2
known_only = false
[verify]
forms = ["blank", "mc"]
perplexity_docs = 2
[attacks]
relearn_steps = 2
relearn_every = 1
relearn_lr = 1e-4
trace_prompts = 10
sae = "{ROOT / 'saes' / 'smollm2-135m-L15-topk'}"
[[edit]]
method = "ga"
config = {{ steps = 4, lr = 1e-4, layers = [20, 21], stop_at = 0.0 }}
"""
    if export:
        text += '[export]\nedit = "ga"\n'
    path = tmp_path / f"tiny{seed}.toml"
    path.write_text(text)
    return path


@pytest.mark.slow      # two full runs (~5 min); notebooks/03 runs a recipe end to end in the default suite
def test_a_run_writes_its_directory_reverts_and_reproduces(tmp_path, smol):
    from transformers import AutoModelForCausalLM

    from repedit.recipes.runner import run_recipe

    w0 = {k: v.clone() for k, v in smol.model.state_dict().items()}
    res = run_recipe(_tiny(tmp_path), tmp_path / "run", echo=None)
    d = res.dir
    for f in ("recipe.toml", "resolved.json", "journal.jsonl", "report.json", "report.html", "plots/recall.png",
              "plots/relearn.png", "export/manifest.json"):
        assert (d / f).exists(), f
    stages = [json.loads(line)["stage"] for line in (d / "journal.jsonl").read_text().splitlines()]
    assert stages[0] == "load" and {"targets", "edit", "attacks", "export"} <= set(stages) and stages[-1] == "report"
    rep = json.loads((d / "report.json").read_text())
    row = rep["comparison"][0]
    assert row["forget_after"] < row["forget_before"]                    # GA lowered the forget answers
    att = rep["edits"]["ga"]["attacks"]
    assert set(att) == {"prefixes", "sae_restoration", "trace_accuracy", "relearn"}
    assert 0 <= att["trace_accuracy"] <= 1 and len(att["relearn"]["held_out"]) == 3
    assert "<table>" in (d / "report.html").read_text() and "repedit run" in (d / "report.html").read_text()
    # the exported model is the edited one; the run left the session's model untouched
    plain = AutoModelForCausalLM.from_pretrained(d / "export")
    ga_delta = {k: v for k, v in plain.state_dict().items() if not torch.equal(v, w0[k])}
    assert set(ga_delta) == {"model.layers.20.mlp.down_proj.weight", "model.layers.21.mlp.down_proj.weight"}
    # same recipe, same seed: same numbers (a fresh load inside run_recipe each time)
    again = run_recipe(_tiny(tmp_path, export=False), tmp_path / "run2", echo=None).report
    for key in ("forget_after", "neighbours_after", "perplexity_after", "trace_accuracy", "relearn_held_out"):
        assert again["comparison"][0][key] == row[key], key
    with pytest.raises(Exception, match="force"):
        run_recipe(_tiny(tmp_path), tmp_path / "run", echo=None)


@pytest.mark.fast
def test_the_time_ratio_is_to_the_fastest_baseline_reaching_the_level():
    """A tracked baseline counts its training seconds up to the first step at the level; an untracked one
    counts only if its end point reaches it; one that never reaches it is not a peer."""
    from repedit.recipes.runner import _comparison

    def facts(forget, neighbours):
        return {"forget": {"mean_probability": forget}, "neighbours": {"mean_probability": neighbours},
                "perplexity": 30.0}

    def edit(family, seconds, forget, neighbours, trajectory=None):
        return {"method": "m", "family": family, "seconds": seconds, "rank": {}, "after": facts(forget, neighbours),
                "attacks": {}, "trajectory": trajectory}

    ga_path = [{"step": 0, "train_seconds": 0.5, "forget": 0.45, "neighbours": 0.33},
               {"step": 5, "train_seconds": 4.0, "forget": 0.09, "neighbours": 0.20},
               {"step": 10, "train_seconds": 8.0, "forget": 0.03, "neighbours": 0.05}]
    edits = {"rocr": edit("repedit", 10.0, 0.10, 0.30), "deep": edit("repedit", 30.0, 0.02, 0.25),
             "ga": edit("baseline", 8.0, 0.03, 0.05, ga_path), "leace": edit("baseline", 2.0, 0.20, 0.02),
             "rmu": edit("baseline", 1.0, 0.44, 0.33)}
    rows = {r["edit"]: r for r in _comparison(facts(0.45, 0.33), edits)}
    assert rows["rocr"]["matched_baseline"] == "ga" and rows["rocr"]["time_ratio_to_baseline"] == 10.0 / 4.0
    assert rows["rocr"]["matched_baseline_neighbours"] == 0.20
    assert rows["deep"]["time_ratio_to_baseline"] is None                 # no baseline got to 0.02
    assert "matched_baseline" not in rows["ga"]                          # nothing else reaches 0.03
    assert rows["leace"]["matched_baseline"] == "ga" and rows["leace"]["matched_baseline_seconds"] == 4.0


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.fast
def test_compare_builds_a_valid_recipe_of_every_fact_method(quick):
    from repedit.recipes.compare import FACT_METHODS, compare_recipe

    text = compare_recipe(["France", "Japan"], list(FACT_METHODS), name="compare", relearn_steps=4, trace_prompts=10,
                          sae="saes/smollm2-135m-L15-topk", quick=quick, seed=3)
    recipe = parse_recipe(text, "<compare>")
    assert [e.method for e in recipe.edits] == list(FACT_METHODS) and recipe.seed == 3
    ga = method_config("ga", next(e for e in recipe.edits if e.method == "ga").config)
    if not quick:        # the trained baselines run until they pass every repedit level (tracked on the way)
        assert ga.stop_at <= 0.02 and set(ga.forms) == {"blank", "qa", "adversarial"} and ga.retain_weight > 0
