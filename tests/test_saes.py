"""The shipped SAE (trained here with sae-lens): loads, reconstructs held-out activations as
reported, and its latents locate real properties (known vs unknown entities)."""

import json
from pathlib import Path

import pytest
import torch

from repedit.errors import ModelNotFoundError
from repedit.fit.saes import evaluate, load_sae
from repedit.locate.sae_features import known_unknown_latents, sae_features, sae_site
from repedit.suites import load_suite, load_text

SAE_DIR = Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk"


@pytest.fixture(scope="module")
def sae():
    return load_sae(SAE_DIR)


@pytest.mark.fast
def test_shipped_sae_is_small_and_in_sae_lens_format(sae):
    cfg = json.loads((SAE_DIR / "cfg.json").read_text())
    assert cfg["d_in"] == 576 and cfg["metadata"]["hook_name"] == "blocks.15.hook_resid_post"
    assert (SAE_DIR / "sae_weights.safetensors").stat().st_size < 6_000_000
    assert sae.W_enc.dtype == torch.float32 and str(sae_site(sae)) == "resid_post.15[-1]"


@pytest.mark.slow      # reconstruction over held-out text (~1.5 min)
def test_reconstruction_matches_reported_quality(smol, sae):
    reported = json.loads((SAE_DIR / "quality.json").read_text())
    measured = evaluate(smol, sae, 15, texts=load_text("wiki", "heldout")[:30])
    assert abs(measured["explained_variance"] - reported["explained_variance"]) < 0.05, (measured, reported)
    assert measured["explained_variance"] > 0.5
    assert measured["l0"] == pytest.approx(json.loads((SAE_DIR / "recipe.json").read_text())["config"]["k"])
    assert measured["ce_loss_recovered"] > 0.8, measured


def test_known_vs_unknown_entity_latents(smol, sae):
    known = [f.subject for f in load_suite("capitals", limit=30)]
    unknown = [f.subject.removeprefix("the Republic of ") for f in load_suite("unknown-entities", limit=30)]
    k, u = known_unknown_latents(smol, sae, known, unknown, top=5)
    assert k.extra["probe_accuracy"] >= 0.8, k.extra
    assert k.features[0].target > k.features[0].control and u.features[0].control > u.features[0].target


def test_concept_latents_prefer_the_concept(smol, sae):
    concept = [f"The capital of {f.subject} is {f.answer}." for f in load_suite("capitals", limit=12)]
    control = [f"The chemical symbol for {f.subject} is {f.answer}." for f in load_suite("elements", limit=12)]
    loc = sae_features(smol, sae, concept, control, top=3)
    assert loc.features[0].target > loc.features[0].control + 0.1


@pytest.mark.fast
def test_missing_sae_is_a_typed_error():
    with pytest.raises(ModelNotFoundError):
        load_sae("saes/no-such-sae")
    with pytest.raises(ModelNotFoundError):
        load_sae("gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre")  # offline: no registry
