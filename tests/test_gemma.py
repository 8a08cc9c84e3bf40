"""Gemma 3 (second real architecture): packaged weights, sites and backends."""

import pytest
import torch

import repedit
from repedit.backends.base import get_backend
from repedit.sites import Point


@pytest.fixture(scope="module")
def gemma():
    return repedit.load("gemma3-270m")


def test_gemma_loads_and_knows_the_eiffel_tower(gemma):
    assert (gemma.layout.family, gemma.n_layers, gemma.d_model, gemma.d_mlp) == ("gemma3", 18, 640, 2048)
    batch = gemma.encode(["The Eiffel Tower is located in the city of"])
    out = gemma.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert "Paris" in gemma.tokenizer.decode(out[0, batch["input_ids"].shape[1]:])


@pytest.mark.parametrize("backend", ["lens", "nnsight"])
def test_gemma_backends_agree_with_torch_and_hf(gemma, backend):
    batch = gemma.encode(["The Eiffel Tower is in Paris.", "Hi"])
    keys = [(9, p) for p in Point]
    with torch.no_grad():
        hs = gemma.model(**batch, output_hidden_states=True).hidden_states
    ref = get_backend(gemma, "torch").run(batch["input_ids"], batch["attention_mask"], reads=keys, stop_early=True)
    res = get_backend(gemma, backend).run(batch["input_ids"], batch["attention_mask"], reads=keys, stop_early=True)
    torch.testing.assert_close(ref.acts[(9, Point.RESID_POST)], hs[10], atol=1e-4, rtol=0)
    for k in keys:
        torch.testing.assert_close(res.acts[k], ref.acts[k], atol=1e-4, rtol=1e-5)
    # Gemma 3 normalises sub-layer outputs: attn_out/mlp_out are what is added to the stream
    a = ref.acts
    torch.testing.assert_close(a[(9, Point.RESID_PRE)] + a[(9, Point.ATTN_OUT)] + a[(9, Point.MLP_OUT)],
                               a[(9, Point.RESID_POST)], atol=1e-2, rtol=1e-4)


def test_concept_vectors_on_gemma_layout(gemma):
    from repedit.locate.causal import check_columns
    from repedit.locate.concept_vectors import concept_vectors
    from repedit.suites import load_suite

    loc = concept_vectors(gemma, "Paris", ["Paris", "France", "French"], layers=[15, 16, 17], n_candidates=3,
                          progress=False)
    best = loc.candidates[0]
    assert best.hits >= 3 and any("Paris" in t or "France" in t or "French" in t for t in best.top_tokens[:50])
    facts = load_suite("capitals")
    target = [f for f in facts if f.subject == "France"]
    others = load_suite("elements")[:3]
    check = check_columns(gemma, best.layer, [best.column], target, others, n_random=2)
    assert check.target_drop > check.random_drop, check
