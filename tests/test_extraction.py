"""White-box extraction (repedit.verify.extraction): logit lens and tuned read-out at every layer of the
forget prompts, before and after a real ROCR edit (Patil et al. 2024)."""

import json

import pytest
import torch

from repedit.edits import EditStack
from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.errors import InputError
from repedit.forward.text import answer_ids, prompt_ids
from repedit.suites import load_suite
from repedit.verify.extraction import (
    TunedLens,
    compare_extraction,
    extraction_attack,
    fit_tuned_lens,
    layer_readouts,
    lens_kl,
)
from repedit.verify.recall import known_facts

SUBJECTS = ("France", "Germany", "Japan", "Italy", "Spain", "Egypt")


@pytest.fixture(scope="module")
def lens(smol):
    return fit_tuned_lens(smol, n_tokens=4_000)          # cached on disk, keyed by the weights


@pytest.fixture(scope="module")
def facts(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    known = known_facts(smol, [caps[s] for s in SUBJECTS])
    assert "France" in [f.subject for f in known]
    return known


def _own_rank_prob(handle, fact) -> tuple[int, float]:
    """The answer's rank and probability in the model's own logits (one unpadded prompt)."""
    spec = fact.forms["blank"]
    ids = torch.tensor([prompt_ids(handle, spec["prompt"], spec["chat"])], device=handle.input_device)
    logits = handle.logits(ids)[0, -1].float()
    tok = answer_ids(handle, fact.answer, spec["chat"])[0]
    return int((logits > logits[tok]).sum()), float(torch.softmax(logits, -1)[tok])


def test_logit_lens_at_the_last_layer_is_the_model_output(smol, lens, facts, tmp_path):
    rd = layer_readouts(smol, facts, lens)
    assert rd["lenses"] == ["logit", "tuned"] and rd["layers"] == list(range(smol.n_layers))
    for f, rec in zip(facts, rd["facts"]):
        rank, prob = _own_rank_prob(smol, f)
        assert rec["logit"]["rank"][-1] == rec["tuned"]["rank"][-1] == rec["model"]["rank"] == rank, f.id
        assert abs(rec["logit"]["prob"][-1] - prob) < 1e-4 and abs(rec["tuned"]["prob"][-1] - prob) < 1e-4
        assert len(rec["logit"]["rank"]) == len(rec["tuned"]["prob"]) == smol.n_layers
    lens.save(tmp_path / "lens.safetensors")
    again = TunedLens.load(tmp_path / "lens.safetensors")
    assert torch.equal(again.weight, lens.weight) and again.n_tokens == lens.n_tokens and again.model == smol.id
    with pytest.raises(InputError):
        layer_readouts(smol, [], lens)
    with pytest.raises(InputError):
        layer_readouts(smol, facts, TunedLens("x", lens.weight[:3], lens.bias[:3]))


def test_tuned_readout_is_closer_to_the_output_than_the_logit_lens(smol, lens):
    mid = smol.n_layers // 2
    kl = lens_kl(smol, lens, n_tokens=256, layers=[mid // 2, mid, smol.n_layers - 1])
    print(f"\nKL to the final distribution (nats, {kl['n_tokens']} held-out tokens) at layers {kl['layers']}: "
          f"logit lens {[round(x, 3) for x in kl['logit']]}, tuned {[round(x, 3) for x in kl['tuned']]}")
    assert kl["tuned"][1] < 0.5 * kl["logit"][1]
    assert kl["tuned"][0] < kl["logit"][0]
    assert kl["logit"][2] < 1e-3 and kl["tuned"][2] < 1e-3          # the last layer is the model's output


def _ranks(res, fid: str, name: str) -> list[int]:
    return next(f for f in res.readouts["facts"] if f["id"] == fid)[name]["rank"]


def test_rocr_edit_drops_the_output_and_extraction_reads_every_layer(smol, lens, facts, model_in):
    target = next(f for f in facts if f.subject == "France")
    before = extraction_attack(smol, facts, lens)
    stack = EditStack(smol)
    stack.push(ROCR(smol, ROCRConfig(stats_tokens=6_000)).edit("France", "the Republic of Talathia"))
    try:
        after = extraction_attack(smol, facts, lens)
    finally:
        stack.revert_all()
    p0, p1 = (next(f for f in r.readouts["facts"] if f["id"] == target.id)["model"]["prob"] for r in (before, after))
    print(f"\nFrance → {target.answer}: output probability {p0:.3f} → {p1:.4f}")
    for name in ("logit", "tuned"):
        print(f"  {name:5s} rank per layer before {_ranks(before, target.id, name)}")
        print(f"  {name:5s} rank per layer after  {_ranks(after, target.id, name)}")
        print(f"  {name:5s} any intermediate top-10: before {before.lenses[name].any_intermediate:.2f}, "
              f"after {after.lenses[name].any_intermediate:.2f}")
    assert p1 < 0.25 * p0
    for res in (before, after):
        assert res.n_facts == len(facts) and set(res.lenses) == {"logit", "tuned"}
        for s in res.lenses.values():
            assert len(s.mean_prob) == len(s.median_rank) == len(s.top_k) == smol.n_layers
            assert 0 <= s.any_intermediate <= 1 and 0 <= s.best_layer < smol.n_layers - 1
    assert before.lenses["logit"].output_top_k == before.lenses["tuned"].output_top_k == 1.0   # known facts
    cmp = compare_extraction(before.to_dict(), json.loads(json.dumps(after.to_dict())))
    print(f"  compare: { {k: (v['erased'], v['recovered']) for k, v in cmp.items() if isinstance(v, dict)} }")
    for name in ("logit", "tuned"):
        assert set(cmp[name]["recovered"]) <= set(cmp[name]["erased"])
        i = facts.index(target)
        assert cmp[name]["output_prob_after"][i] < 0.25 * cmp[name]["output_prob_before"][i]
    # bf16: the float32 read-out is cast at the boundary; the last layer still is the model's output
    bf = model_in(torch.bfloat16)
    res = extraction_attack(bf, facts[:3], lens)
    for rec in res.readouts["facts"]:
        assert all(0 <= p <= 1 for p in rec["tuned"]["prob"] + rec["logit"]["prob"])
        assert abs(rec["tuned"]["prob"][-1] - rec["model"]["prob"]) < 0.05, rec["id"]
