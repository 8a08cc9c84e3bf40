"""lm-eval capability scores of the live model: equal to a direct log-likelihood computation, lowered
by an edit that breaks the model and restored bit-for-bit by reverting it, written by recipe runs
before and after each edit, and strict recipe validation. Runs the local fixture task
tests/fixtures/lm_eval/repedit_capitals_mc.yaml (12 four-option capital questions) offline."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")                      # the fixture task's data is local
pytest.importorskip("lm_eval", reason="needs the eval extra: pip install 'repedit[eval]'")

from repedit.edits.base import DenseDelta, Edit  # noqa: E402
from repedit.edits.stack import EditStack  # noqa: E402
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids  # noqa: E402
from repedit.recipes.schema import RecipeError, parse_recipe  # noqa: E402
from repedit.verify.lm_eval_adapter import (  # noqa: E402
    LmEvalMissingError,
    TaskNotFoundError,
    lm_eval_scores,
)

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval"
TASK = "repedit_capitals_mc"
DOCS = [json.loads(line) for line in (FIXTURE / f"{TASK}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def original(smol):
    return lm_eval_scores(smol, [TASK], FIXTURE, samples=True)[TASK]


def test_scores_equal_a_direct_log_likelihood_computation(smol, original):
    """acc = argmax of the summed continuation log-prob, acc_norm = of that per character; both recomputed
    here from repedit's own span log-probs, item by item."""
    assert original["n"] == len(DOCS) == 12
    prompts, conts = [], []
    for d in DOCS:
        p = prompt_ids(smol, f"Question: What is the capital of {d['country']}?\nAnswer:", False)
        for c in d["choices"]:
            prompts.append(p)
            conts.append(answer_ids(smol, c, False))
    mean = continuation_logprobs(smol, prompts, conts)                     # per token
    summed = np.array([m * len(c) for m, c in zip(mean, conts)]).reshape(len(DOCS), 4)
    theirs = np.array([s["loglikelihoods"] for s in original["samples"]])
    np.testing.assert_allclose(theirs, summed, atol=1e-3)
    target = np.array([d["answer"] for d in DOCS])
    assert [s["target"] for s in original["samples"]] == target.tolist()
    chars = np.array([[len(c) for c in d["choices"]] for d in DOCS])
    assert original["acc"] == pytest.approx((summed.argmax(1) == target).mean())
    assert original["acc_norm"] == pytest.approx(((summed / chars).argmax(1) == target).mean())
    assert original["acc"] >= 0.6                                          # chance is 0.25
    acc = original["acc"]
    assert original["acc_stderr"] == pytest.approx((acc * (1 - acc) / (len(DOCS) - 1)) ** 0.5)


def test_a_breaking_edit_lowers_the_score_and_its_revert_restores_it_bit_for_bit(smol, original):
    refs = [smol.matrix("mlp_out", layer) for layer in (0, 1)]
    broken = Edit("zero-mlp", tuple(DenseDelta(r.name, -r.param.detach().clone()) for r in refs), smol.id)
    stack = EditStack(smol)
    with stack.temporarily(broken):
        after = lm_eval_scores(smol, [TASK], FIXTURE, samples=True)[TASK]
    assert after["acc"] <= original["acc"] - 0.3
    again = lm_eval_scores(smol, [TASK], FIXTURE, samples=True)[TASK]
    assert again == original                                               # every float, every item


def test_it_leaves_no_state_behind(smol):
    model, tok = smol.model, smol.tokenizer
    params = dict(model.named_parameters(remove_duplicate=False))
    pad, side = tok.pad_token, tok.padding_side
    model.train()
    try:
        random.seed(3)
        np.random.seed(3)
        torch.manual_seed(3)
        states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
        lm_eval_scores(smol, [TASK], FIXTURE, limit=2)
        assert all(m.training for m in model.modules())                   # HFLM calls .eval(); undone
        assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
        assert torch.equal(torch.get_rng_state(), states[2])              # lm-eval seeds globally; undone
    finally:
        model.eval()
    assert all(p is params[n] for n, p in model.named_parameters(remove_duplicate=False))
    assert (tok.pad_token, tok.padding_side) == (pad, side) and torch.is_grad_enabled()


def test_bfloat16_model(model_in, original):
    half = model_in(torch.bfloat16)
    scores = lm_eval_scores(half, [TASK], FIXTURE, limit=6, samples=True)[TASK]
    ll = np.array([s["loglikelihoods"] for s in scores["samples"]])
    np.testing.assert_allclose(ll, [s["loglikelihoods"] for s in original["samples"][:6]], atol=0.5)
    assert scores["n"] == 6 and scores["acc"] >= 0.6 and half.dtype == torch.bfloat16


def test_unknown_task_and_missing_lm_eval_are_typed_errors(smol, monkeypatch):
    with pytest.raises(TaskNotFoundError, match=f"'repedit_capitals'.*{TASK}"):
        lm_eval_scores(smol, ["repedit_capitals"], FIXTURE)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)               # as if lm-eval were not installed
    with pytest.raises(LmEvalMissingError, match=r"pip install 'repedit\[eval\]'"):
        lm_eval_scores(smol, [TASK], FIXTURE)


def _recipe(tmp_path, verify: str) -> Path:
    include = os.path.relpath(FIXTURE, tmp_path)                          # relative: from the recipe's folder
    path = tmp_path / "cap.toml"
    path.write_text(f"""[run]
name = "cap"
[targets]
forget = ["France"]
retain = ["Germany"]
neighbours = 0
unrelated = 0
known_only = false
[verify]
forms = ["mc"]                         # scored, not generated: quick
perplexity_docs = 2
knownness = false
lm_eval_include = "{include}"
{verify}
[attacks]
prefixes = false
[[edit]]
method = "ga"
config = {{ steps = 1, lr = 1e-3, layers = [20, 21], stop_at = 0.0 }}
""")
    return path


def test_a_recipe_run_reports_lm_eval_before_and_after_each_edit(tmp_path, smol):
    from repedit.recipes.runner import run_recipe

    path = _recipe(tmp_path, f'lm_eval_tasks = ["{TASK}"]\nlm_eval_limit = 4')
    rep = run_recipe(path, tmp_path / "run", echo=None).report
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = saved["before"]["lm_eval"][TASK], saved["edits"]["ga"]["after"]["lm_eval"][TASK]
    assert before["n"] == after["n"] == 4 and 0 <= after["acc"] <= 1
    assert before["acc"] == lm_eval_scores(smol, [TASK], FIXTURE, limit=4)[TASK]["acc"]
    row = rep["comparison"][0]
    assert row[f"lm_eval_{TASK}_acc_before"] == before["acc"] and row[f"lm_eval_{TASK}_acc_after"] == after["acc"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Capability (lm-eval)" in page and f"{TASK} acc_norm" in page
    assert saved["recipe"]["verify"]["lm_eval_include"] == str(FIXTURE.resolve())


@pytest.mark.fast
def test_no_tasks_measures_nothing():
    from repedit.recipes.measure import lm_eval_measure

    recipe = parse_recipe('[targets]\nforget = ["France"]\n[[edit]]\nmethod = "ga"\n', "r.toml")
    assert recipe.verify.lm_eval_tasks == () and lm_eval_measure(None, recipe) is None


@pytest.mark.parametrize("verify, key, words", [
    ('lm_eval_tasks = ["repedit_capitals"]', "lm_eval_tasks", ["'repedit_capitals'", TASK]),
    ('lm_eval_tasks = "x"', "lm_eval_tasks", ["must be list"]),
    ('lm_eval_tasks = [""]', "lm_eval_tasks", ["non-empty strings"]),
    (f'lm_eval_tasks = ["{TASK}"]\nlm_eval_limit = -1', "lm_eval_limit", ["lm_eval_limit must be >= 0"]),
])
@pytest.mark.fast
def test_invalid_lm_eval_keys_name_the_line_and_the_fix(tmp_path, verify, key, words):
    path = _recipe(tmp_path, verify)
    text = path.read_text()
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(key))
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.fast
def test_a_missing_include_folder_names_its_line(tmp_path):
    text = _recipe(tmp_path, f'lm_eval_tasks = ["{TASK}"]').read_text().replace("fixtures/lm_eval", "fixtures/nope")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("lm_eval_include"))
    with pytest.raises(RecipeError, match=rf"^{tmp_path / 'cap.toml'}:{line}: .*no such folder"):
        parse_recipe(text, str(tmp_path / "cap.toml"))


@pytest.mark.fast
def test_compare_passes_the_lm_eval_options_through():
    from repedit.recipes.compare import compare_recipe

    text = compare_recipe(["France"], ["ga"], name="c", relearn_steps=0, trace_prompts=0, sae=None, quick=True,
                          seed=0, lm_eval_tasks=[TASK], lm_eval_include=str(FIXTURE.resolve()), lm_eval_limit=3)
    v = parse_recipe(text, "<compare>").verify
    assert (v.lm_eval_tasks, v.lm_eval_include, v.lm_eval_limit) == ((TASK,), str(FIXTURE.resolve()), 3)
