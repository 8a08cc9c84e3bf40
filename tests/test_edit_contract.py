"""The shared contract every edit method passes, on the real default model, in every dtype.

The cases come from the method registry (`repedit.methods.METHODS`: recipes, `compare`, the
CLI and this test read the same table) plus the ablations, each × {float32, bfloat16, float16}:
apply/revert bit-exact, rank as claimed (exactly in float32; in half precision the applied change
equals the claimed-rank change up to half a unit in the last place of each written value), merged ==
hook form within the dtype's tolerance, failed edits leave the bytes identical, export reloads in
plain transformers and reproduces the edited logits, the manifest carries every config field.
"""

from pathlib import Path

import pytest
import torch

from edit_contract import (  # noqa: F401  (the shared contract's tests, run on this module's cases)
    test_apply_changes_logits_and_revert_is_bit_exact,
    test_export_reloads_in_plain_transformers_and_reverts,
    test_merge_equals_hook_form,
    test_non_finite_and_mismatched_edits_leave_weights_identical,
    test_rank_is_what_it_claims,
)
from repedit.edits.ablate import neuron_edit, value_vector_edit
from repedit.methods import METHODS, Context, method_config
from repedit.suites import load_suite

SAE = str(Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Tiny settings per registered method (the contract checks mechanics, not effect). Trained methods take a
# larger step in half precision so that three steps stand clear of bf16/fp16 spacing (PrecisionError otherwise).
TINY = {
    "rocr": {"stats_tokens": 6_000},
    "mrp": {"layer": 6, "steps": 3},
    "sae-align": {"steps": 3, "lr": 3e-2, "forms": ["blank"], "n_reference": 6, "n_retain": 4, "lm_texts": 2,
                  "lm_batch": 1},
    "pga": {"depth": 6},
    "md-pga": {"depth": 6, "k": 2},
    "adversarial-pga": {"depth": 6, "max_rounds": 2},
    "pga-trained": {"depth": 6, "steps": 3, "lr": 2e-2, "refit_every": 2, "n_contexts": 2, "batch_pairs": 6,
                    "clean_texts": 2},
    "ga": {"layers": [20, 21], "steps": 3, "lr": 1e-4, "stop_at": 0.0},
    "npo": {"layers": [20, 21], "steps": 3, "lr": 1e-4, "stop_at": 0.0},
    "rmu": {"layer": 6, "steps": 2, "lr": 1e-4, "stop_at": 0.0, "retain_texts": 2},
    "leace": {"depth": 6},
    "leace-pool": {"depth": 6},
}
HALF_LR = {"ga": 1e-3, "npo": 1e-3, "rmu": 1e-3}
ABLATIONS = {
    "value-vector-zero": lambda h: value_vector_edit(h, 29, [1321, 697]),
    "value-vector-noise": lambda h: value_vector_edit(h, 29, [1321], mode="noise", noise_std=0.5),
    "neuron-suppress": lambda h: neuron_edit(h, {21: [522], 29: [1285]}, factor=0.0),
    "neuron-amplify": lambda h: neuron_edit(h, {21: [522]}, factor=2.0),
}
CASES = sorted(METHODS) + sorted(ABLATIONS)


def test_every_registered_method_has_a_contract_case():
    assert set(TINY) == set(METHODS), f"add tiny settings for {set(METHODS) - set(TINY)} to TINY"


def _capitals(*subjects):
    caps = {f.subject: f for f in load_suite("capitals")}
    return [caps[s] for s in subjects]


_POOLS: dict = {}


def _pool(h):
    from repedit.fit.pool_screen import screened
    from repedit.suites.pools import load_pool

    key = (h.id, h.dtype)
    if key not in _POOLS:
        _POOLS[key] = screened(h, load_pool("natural"))[0]
    return _POOLS[key]


def build(name: str, h):
    if name in ABLATIONS:
        return ABLATIONS[name](h), None
    spec = METHODS[name]
    values = dict(TINY[name])
    if h.dtype != torch.float32 and name in HALF_LR:
        values["lr"] = HALF_LR[name]
    cfg = method_config(name, values)
    if spec.targets == "pool":
        ctx = Context(h, pool=_pool(h), contexts=3)
    else:
        ctx = Context(h, forget=_capitals("France"), retain=_capitals("Germany", "Italy", "Spain"),
                      known=["Japan", "Germany", "Italy", "Russia", "China", "Mexico", "Spain"], sae=SAE)
    (edit,) = spec.build(ctx, cfg)
    return edit, cfg


# float16 runs every case with `-m ""`; the default run keeps a fast subset (closed form, ablation, fold)
FP16_DEFAULT = {"rocr", "value-vector-zero", "neuron-suppress", "leace"}
PARAMS = [pytest.param((c, d), id=f"{c}-{d}",
                       marks=[pytest.mark.slow] if d == "float16" and c not in FP16_DEFAULT else [])
          for d in DTYPES for c in CASES]


@pytest.fixture(scope="module", params=PARAMS)
def made(request, model_in):
    name, dtype = request.param
    needs_untied = name in METHODS and METHODS[name].needs_untied
    h = model_in(DTYPES[dtype], untied=needs_untied)
    edit, cfg = build(name, h)
    return name, dtype, edit, cfg, h



@pytest.fixture
def float32_handle(model_in):
    return lambda: model_in(torch.float32)


@pytest.fixture
def export_base_id():
    return "HuggingFaceTB/SmolLM2-135M-Instruct"
