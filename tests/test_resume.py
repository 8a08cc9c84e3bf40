"""Resumable runs (issue 18.3): a run killed between two edits and resumed writes the report of an
uninterrupted run (timing fields aside) and rebuilds nothing it had saved."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from repedit.errors import InputError
from repedit.recipes.run_state import RunState, without_timing
from repedit.recipes.schema import parse_recipe

# the cheapest real run: two facts, one form, one document, trace features (recomputed on resume), LEACE (which
# unties the embeddings) then two steps of gradient ascent
RECIPE = """[run]
name = "resume"
seed = 0
[targets]
forget = ["France", "Japan"]
retain = 2
neighbours = 2
unrelated = 0
known_only = false
[verify]
forms = ["blank"]
perplexity_docs = 1
knownness = false
[attacks]
prefixes = false
trace_prompts = 6
[[edit]]
method = "leace"
config = { forms = ["blank"] }
[[edit]]
method = "ga"
config = { steps = 2, lr = 1e-4, layers = [20, 21], stop_at = 0.0 }
"""
# the same with the knownness probe (fitted by the before-measure, refitted on resume) and ROCR second
SLOW = RECIPE.replace("knownness = false", "knownness = true").replace(
    'method = "ga"\nconfig = { steps = 2, lr = 1e-4, layers = [20, 21], stop_at = 0.0 }',
    'method = "rocr"\nconfig = { stats_tokens = 1000 }')
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(*args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "repedit.cli", "run", *args], env=ENV, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def _journal(d) -> list[dict]:
    return [json.loads(line) for line in (d / "journal.jsonl").read_text().splitlines()]


def _report(d, environment: bool = True) -> str:
    rep = json.loads((d / "report.json").read_text())
    if not environment:                               # this process's torch threads may differ from the CLI's
        rep.pop("environment")
    return json.dumps(without_timing(rep), sort_keys=True)


def _kill_and_resume(root, text: str):
    """(an uninterrupted run, a run SIGKILLed once its first edit was saved and then resumed)."""
    recipe = root / "r.toml"
    recipe.write_text(text)
    whole, killed = root / "whole", root / "killed"
    _run(str(recipe), "--out", str(whole))
    p = subprocess.Popen([sys.executable, "-m", "repedit.cli", "run", str(recipe), "--out", str(killed)], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (killed / "state" / "edit-00.json").exists():
            assert p.poll() is None, "the run ended before its first edit was saved"
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert not (killed / "state" / "edit-01.json").exists() and not (killed / "report.json").exists()
    _run("--resume", str(killed))
    return whole, killed


def _check(whole, killed, second: str) -> dict:
    """The reports agree but for timing; the first edit ran once; returns the resume's "recomputed" lines."""
    assert _report(killed) == _report(whole)          # every number but the timing fields, bit for bit
    rows = _journal(killed)
    stages = [(r["stage"], r.get("name") or r.get("what")) for r in rows]
    assert stages.count(("edit", "leace")) == 1 and stages.count(("edit", second)) == 1   # leace not rebuilt
    assert stages.count(("targets", None)) == 1 and stages.count(("measure", "before")) == 1
    at = stages.index(("resume", None))
    assert stages[at + 1:at + 3] == [("load", None), ("untie", None)]          # untied again on the reload
    assert [w for s, w in stages[at:] if s == "restored"] == ["targets", "before", "leace"]
    return {r["what"]: r for r in rows[at:] if r["stage"] == "recomputed"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _kill_and_resume(tmp_path_factory.mktemp("resume"), RECIPE)


def test_a_killed_run_resumes_to_the_uninterrupted_report(runs):
    again = _check(*runs, "ga")
    assert again["original records"]["keys"] == ["trace", "trace_vocab"] and "knownness" not in again


@pytest.mark.slow      # 2-11 min on 2 shared cores: the knownness probe is fitted in every measure
def test_a_killed_run_refits_the_knownness_probe_on_resume(tmp_path):
    again = _check(*_kill_and_resume(tmp_path, SLOW), "rocr")
    assert again["knownness"]["matches_before"] is True          # the probe refitted on the original model


def test_resuming_a_finished_run_recomputes_nothing(runs, monkeypatch):
    import repedit
    from repedit.recipes import runner

    _, killed = runs
    first = _report(killed, environment=False)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    patched = ((repedit.models, "load"), (runner, "resolve"), (runner, "_run_edit"), (runner, "measure_facts"))
    for where, name in patched:
        monkeypatch.setattr(where, name, boom)
    res = runner.resume_run(killed, echo=None)
    assert _report(killed, environment=False) == first and res.report["edits"]["ga"]["method"] == "ga"
    assert [r["stage"] for r in _journal(killed)][-6:] == ["resume", *["restored"] * 4, "report"]


@pytest.mark.fast
def test_resume_refuses_a_directory_without_state_or_another_recipe(tmp_path):
    from repedit.recipes.runner import resume_run, run_recipe

    recipe = parse_recipe(RECIPE, "r.toml")
    with pytest.raises(InputError, match="no saved run state.*--force"):
        run_recipe(recipe, tmp_path / "none", resume=True, echo=None)
    with pytest.raises(InputError, match="no saved run state"):
        resume_run(tmp_path / "none", echo=None)
    RunState.start(tmp_path / "run", recipe, "repedit run r.toml")
    other = parse_recipe(RECIPE.replace("seed = 0", "seed = 1"), "r.toml")
    with pytest.raises(InputError, match=r"differs.*\['seed'\].*--force"):
        run_recipe(other, tmp_path / "run", resume=True, echo=None)
    with pytest.raises(InputError, match="pass one of them"):
        run_recipe(recipe, tmp_path / "run", resume=True, force=True, echo=None)
    with pytest.raises(InputError, match="recipe of .* is gone"):
        resume_run(tmp_path / "run", echo=None)          # the source "r.toml" does not exist


@pytest.mark.fast
def test_targets_round_trip_through_json(tmp_path):
    """The resolved targets a resumed run rebuilds equal the live ones (facts, references, texts)."""
    from repedit.recipes.measure import Resolved, knownness_references
    from repedit.suites import load_suite, load_text

    recipe = parse_recipe(RECIPE, "r.toml")
    facts = load_suite("capitals")
    refs = knownness_references(facts[:2])
    live = Resolved(forget=facts[:2], retain=facts[2:4], neighbours=facts[4:6], known=[f.subject for f in facts[2:]],
                    texts=load_text("news", "heldout")[:2], not_known=["x"], unknown=list(refs.names),
                    unknown_refs=refs, knownness=object())
    state = RunState.start(tmp_path, recipe, "c")
    carried = state.save_targets(live, recipe)
    back = state.targets(recipe)
    for r in (carried, back):
        for name in ("forget", "retain", "neighbours", "unrelated", "known", "texts", "not_known", "unknown",
                     "unknown_refs"):
            assert getattr(r, name) == getattr(live, name), name
        assert r.knownness is None and r.to_dict() == live.to_dict()       # the probe is refitted, not saved


@pytest.mark.fast
def test_a_compare_run_keeps_its_recipe_from_the_start(tmp_path):
    """`repedit compare` builds its recipe from options: the run directory holds it before any work, so a
    killed compare resumes with `repedit run --resume DIR`."""
    from repedit.recipes.run_state import recipe_of

    out = tmp_path / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "repedit.cli", "compare", "--forget", "France", "--methods",
                             "leace", "--quick", "--relearn-steps", "0", "--trace-prompts", "0", "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "state" / "run.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "state" / "run.json").exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    recipe = recipe_of(out)
    assert recipe.name == "compare" and [e.method for e in recipe.edits] == ["leace"]
    assert (out / "recipe.toml").read_text().startswith("[run]")
