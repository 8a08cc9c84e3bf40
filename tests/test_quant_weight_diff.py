"""Quantisation attack and weight-diff attack on the real default model (issue 17, points 1 and 2)."""

import pytest
import torch

from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.edits.stack import EditStack
from repedit.errors import ConfigError
from repedit.suites import load_suite
from repedit.verify.quantisation_attack import quantisation_probabilities, recovered_fractions
from repedit.verify.quantised_weights import (
    GGUF_SCHEMES,
    delta_survival,
    parse_scheme,
    quantise_tensor,
    quantised,
    step_size,
)
from repedit.verify.weight_diff import weight_diff_attack


@pytest.fixture(scope="module")
def caps():
    return {f.subject: f for f in load_suite("capitals")}


@pytest.mark.fast
def test_schemes_round_to_their_grid_and_name_the_valid_ones():
    w = torch.randn(8, 256, generator=torch.Generator(device="cpu").manual_seed(0), device="cpu")
    for name in ("int8", "int4-g32", "int4-g128", *GGUF_SCHEMES):
        q = quantise_tensor(w, name)
        assert torch.equal(quantise_tensor(q, name), q), name            # a grid point stays put
        err = (q - w).abs() / step_size(w, name)
        assert float(err.max()) <= 1.01, name                             # within a step of its value
    assert int(torch.unique(quantise_tensor(w, "int4-g32")[0, :32]).numel()) <= 16
    with pytest.raises(ConfigError, match="int4-g<group>"):
        parse_scheme("gguf-q4_k")
    with pytest.raises(ConfigError, match="groups of 128"):
        quantise_tensor(torch.randn(4, 96, device="cpu"), "int4-g128")


def test_quantised_model_is_restored_bit_for_bit(smol):
    before = {n: p.detach().clone() for n, p in smol.model.named_parameters()}
    with quantised(smol, "gguf-q4_0") as names:
        assert len(names) >= 7 * smol.n_layers                           # every 2-D weight of every block
        w = dict(smol.model.named_parameters())[names[-1]]
        assert not torch.equal(w, before[names[-1]])
    assert all(torch.equal(p, before[n]) for n, p in smol.model.named_parameters())


def test_quantisation_undoes_a_deliberately_tiny_edit(smol, caps):
    """A few gradient-ascent steps at lr 1e-5 move each weight far less than half a Q4_1 step, and the shipped
    weights lie on the Q4_1 grid: the round trip rounds the whole edit away, and the analysis predicts it."""
    from repedit.baselines.gradient import GradientConfig, gradient_unlearn

    facts, neigh = [caps["France"]], [caps["Italy"]]
    layers = tuple(range(4, 8))
    edit = gradient_unlearn(smol, facts, config=GradientConfig(steps=8, lr=1e-5, layers=layers, stop_at=0.0))
    names = list(edit.params)
    schemes = ["int8", "gguf-q4_1"]
    orig = quantisation_probabilities(smol, facts, schemes, forms=("blank",), neighbours=neigh, names=names)
    stack = EditStack(smol)
    stack.push(edit)
    try:
        edited = quantisation_probabilities(smol, facts, schemes, forms=("blank",), neighbours=neigh, names=names)
        survival = {n: delta_survival(w0, dict(smol.model.named_parameters())[n], "gguf-q4_1")
                    for n, w0 in stack.originals().items()}
    finally:
        stack.revert_all()
    erased = orig["none"]["forget_mean"] - edited["none"]["forget_mean"]
    assert erased > 0.05, (orig["none"], edited["none"])                  # the tiny edit did erase something
    rec = recovered_fractions(orig, edited)
    assert rec["gguf-q4_1"]["recovered"] > 0.9, rec                       # rounded away: the answer is back
    assert rec["int8"]["recovered"] < 0.5, rec                            # int8 keeps it
    assert all(s["on_grid"] > 0.99 and s["share_over_half_step"] < 0.01 and s["rounds_away"]
               for s in survival.values()), survival


def test_weight_diff_names_an_unprotected_rank_one_edit_and_decoys_hide_it_from_a_top_k_reader(smol, caps):
    suite = list(caps)
    candidates = suite[:40] + ["France"]
    france = caps["France"]
    found = {}
    for decoys in (0, 8):
        stack = EditStack(smol)
        stack.push(ROCR(smol, ROCRConfig(stats_tokens=6_000, decoys=decoys)).edit("France", "the Republic of Talathia"))
        try:
            for k in (8, 9):
                if decoys == 0 and k == 9:
                    continue
                res = weight_diff_attack(smol, stack.originals(), [france], k=k, candidates=candidates, patch=False)
                found[(decoys, k)] = res.facts[0]["subject_keys"]
                if decoys == 0:
                    sv = next(iter(res.params.values()))["singular_values"]
                    assert len(sv) == 1, sv                               # rank one: one direction
                    assert res.summary["named_share"] == 1.0
        finally:
            stack.revert_all()
    assert found[(0, 8)] == 0, found                                      # France is the attacker's first guess
    assert found[(8, 8)] > 5, found                                       # 8 decoys push it out of a top-8 read
    assert found[(8, 9)] == 0, found                                      # a reader of 9 directions finds it again


@pytest.mark.fast
def test_bfloat16_weights_quantise_in_float32_and_come_back_as_bfloat16():
    w = torch.randn(4, 128, generator=torch.Generator(device="cpu").manual_seed(1), device="cpu").to(torch.bfloat16)
    for name in ("int8", "int4-g32", "gguf-q4_1"):
        q = quantise_tensor(w, name)
        assert q.dtype == torch.bfloat16 and q.shape == w.shape
        assert float(((q.float() - w.float()).abs() / step_size(w, name)).max()) <= 1.05, name
    s = delta_survival(w, (w.float() + 0.2).to(torch.bfloat16), "int8")
    assert s["survival"] > 0.5 and not s["rounds_away"]
