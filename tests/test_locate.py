"""Locators on the real default model: each location must matter causally, and specifically."""

import json
from pathlib import Path

import pytest
import torch

from repedit.errors import InputError
from repedit.locate.causal import check_columns, check_neurons, columns_ablated
from repedit.locate.concept_vectors import concept_token_ids, concept_vectors, trace_metrics
from repedit.locate.knowledge_neurons import _refine, knowledge_neurons
from repedit.suites import load_suite


@pytest.fixture(scope="module")
def france():
    facts = load_suite("capitals")
    target = [f for f in facts if f.subject == "France"]
    related = [f for f in facts if f.subject in ("Japan", "Germany", "Italy", "Egypt")]
    unrelated = load_suite("elements")[:4]
    return target, related, unrelated


def test_concept_tokens_skip_fragments(smol):
    toks = [smol.tokenizer.decode([i]) for i in concept_token_ids(smol.tokenizer, ["Paris", "French"])]
    assert " Paris" in toks and " French" in toks
    assert all(len(t.strip()) >= 4 for t in toks), toks
    with pytest.raises(InputError):
        concept_token_ids(smol.tokenizer, [])


def test_concept_vector_ablation_is_causal_and_specific(smol, france):
    target, related, unrelated = france
    loc = concept_vectors(smol, "Paris", ["Paris", "France", "French"], layers=range(25, 30), progress=False)
    best = loc.candidates[0]
    assert best.hits >= 3
    check = check_columns(smol, best.layer, [best.column], target, related + unrelated, n_random=3)
    assert check.target_drop > check.random_drop + 0.02, check
    assert check.target_drop > check.other_drop, check


def test_column_ablation_restores_weights_bit_exactly(smol):
    w = smol.matrix("mlp_out", 29).param
    before = w.detach().clone()
    with pytest.raises(RuntimeError):
        with columns_ablated(smol, 29, [5, 7], mode="noise"):
            assert not torch.equal(w, before)
            raise RuntimeError("boom")
    assert torch.equal(w, before)


def test_trace_metrics(smol):
    ref = smol.matrix("mlp_out", 29)
    col = ref.param.detach()[:, 11].clone()
    same = trace_metrics(smol, 29, 11, col)
    assert same["cosine"] == pytest.approx(1.0, abs=1e-5) and same["jaccard"] == 1.0 and same["l2"] == 0
    with columns_ablated(smol, 29, [11], mode="noise"):
        moved = trace_metrics(smol, 29, 11, col)
    assert moved["l2"] > 0 and moved["jaccard"] < 1.0


@pytest.mark.slow      # integrated gradients over 30 layers × 3 forms (~20 s at 1 thread)
def test_knowledge_neurons_suppression_beats_random_neurons(smol, france):
    target, related, unrelated = france
    kn = knowledge_neurons(smol, target[0], progress=False)
    assert 1 <= len(kn.neurons) <= 8, kn.neurons
    sup = check_neurons(smol, kn.by_layer(), target, unrelated, factor=0.0, n_random=3)
    assert sup.target_drop > sup.random_drop + 0.05, sup
    assert sup.target_drop > sup.other_drop, sup
    amp = check_neurons(smol, kn.by_layer(), target, unrelated, factor=2.0, n_random=0)
    assert amp.target_drop < sup.target_drop


@pytest.mark.fast
def test_refinement_adjusts_share_until_two_to_five_remain():
    sets = [{(0, 0), (0, 1), (0, 2)}, {(0, 0), (3, 3)}, {(0, 0), (0, 1), (4, 4)}]
    kept, p = _refine(sets)
    assert kept == [(0, 0), (0, 1)] and p == pytest.approx(0.65)
    # no share gives 2-5 neurons: it still terminates, with the last share tried
    sets = [{(0, i) for i in range(10)}, {(0, i) for i in range(3)}, {(0, i) for i in range(2, 12)}]
    kept, p = _refine(sets)
    assert 0.05 <= p <= 1.0


def test_locate_cli_writes_json_and_plot(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cv.json"
    res = subprocess.run([sys.executable, "-m", "repedit.cli", "locate", "concept-vectors", "--concept", "Paris",
                          "--words", "Paris,France,French", "--layers", "28-29", "--top", "3", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["candidates"] and Path(out.with_suffix(".png")).stat().st_size > 1000


@pytest.mark.parametrize("rows", [120, 8])      # 8: one layer per forward, so later groups start part-way up
def test_integrated_gradients_last_token_path_equals_full_prompts(smol, monkeypatch, rows):
    """The fast path (prompt cached once, the m copies of several layers run as the last token only, blocks
    below a group skipped) gives the attributions of m full-prompt forwards per layer."""
    from repedit.forward.text import answer_ids, prompt_ids
    from repedit.locate import knowledge_neurons as kn

    fact = next(f for f in load_suite("capitals") if f.subject == "France")
    spec = fact.forms["qa"]
    prompt, target = prompt_ids(smol, spec["prompt"], spec["chat"]), answer_ids(smol, fact.answer, spec["chat"])[0]
    monkeypatch.setattr(kn, "ROWS", rows)
    fast = kn.integrated_gradients(smol, prompt, target, [3, 17, 29], steps=4)
    monkeypatch.setattr("repedit.forward.generation.keeps_tail_logits", lambda handle: False)
    full = kn.integrated_gradients(smol, prompt, target, [3, 17, 29], steps=4)
    scale = float(full.abs().max())
    assert scale > 0
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.fast
def test_integrated_gradients_last_token_path_on_every_architecture(tiny_dirs, monkeypatch):
    import repedit
    from repedit.locate import knowledge_neurons as kn

    monkeypatch.setattr(kn, "ROWS", 3)                 # steps=3: one layer per forward
    for arch, path in tiny_dirs.items():
        h = repedit.load(str(path))
        prompt = h.encode(["The capital of France is"])["input_ids"][0].tolist()
        fast = kn.integrated_gradients(h, prompt, 42, range(h.n_layers), steps=3)
        with monkeypatch.context() as m:
            m.setattr("repedit.forward.generation.keeps_tail_logits", lambda handle: False)
            full = kn.integrated_gradients(h, prompt, 42, range(h.n_layers), steps=3)
        torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()), msg=arch)
