"""The shared contract every edit method passes (on the real default model)."""

import dataclasses
import json

import pytest
import torch

from repedit.edits import EditError, EditStack, LowRankDelta, applied
from repedit.edits.ablate import neuron_edit, value_vector_edit
from repedit.edits.hooks import hooked
from repedit.baselines.gradient import GradientConfig, gradient_unlearn
from repedit.edits.fold import fold_projection
from repedit.edits.mrp import MRP, MRPConfig
from repedit.edits.pga import pga
from repedit.edits.pga_trained import TrainedPGAConfig, trained_pga
from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.export import ExportError, export, load_edits, read_manifest, revert
from repedit.locate.causal import neuron_writes
from repedit.suites import load_suite
from repedit.verify.features import CONTEXTS
from repedit.verify.pools import load_pool, screened
from roundtrip import assert_export_roundtrip

TEXTS = ["The capital of France is", "Paris is a city in", "The chemical symbol of gold is"]
ROCR_TEST_CONFIG = ROCRConfig(stats_tokens=6_000)


def _weights(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def _logits(h):
    batch = h.encode(TEXTS)
    return h.logits(batch["input_ids"], batch["attention_mask"])


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _capitals(*subjects):
    caps = {f.subject: f for f in load_suite("capitals")}
    return [caps[s] for s in subjects]


def _mrp_folded(h):
    mrp = MRP(h, MRPConfig(layer=6, steps=3))
    return fold_projection(h, mrp.task(_capitals("France", "Japan"), _capitals("Germany", "Italy", "Spain")))


def _pga_folded(h):
    pool, _ = screened(h, load_pool("natural"))
    return fold_projection(h, pga(h, pool, depth=6, contexts=CONTEXTS[:3]))


def _pga_trained(h):
    pool, _ = screened(h, load_pool("natural"))
    # lr large enough that the rank-one change stands well above float32 rounding of W (rank test, rtol 1e-6)
    cfg = TrainedPGAConfig(depth=6, steps=3, lr=2e-2, refit_every=2, n_contexts=2, batch_pairs=6, clean_texts=2)
    return trained_pga(h, pool, cfg, progress=False)


def _ga(h):
    cfg = GradientConfig(layers=(20, 21), steps=3, lr=1e-4, stop_at=0.0)
    return gradient_unlearn(h, _capitals("France", "Japan"), config=cfg)


def _sae_align(h):
    from pathlib import Path

    from repedit.edits.sae_align import FRAMES, SAEAlignConfig, sae_align, unknown_entities
    from repedit.saes import load_sae

    sae = load_sae(Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk")
    cfg = SAEAlignConfig(steps=3, lr=3e-2, frames=FRAMES[:2], forms=("blank",), n_reference=6, n_retain=4,
                         lm_texts=2, lm_batch=1)
    known = ["Japan", "Germany", "Italy", "Russia", "China", "Mexico", "Spain"]
    return sae_align(h, sae, _capitals("France")[0], known, unknown_entities()[:6], config=cfg)


def _rmu(h):
    from repedit.baselines.rmu import RMUConfig, rmu_unlearn

    cfg = RMUConfig(layer=6, steps=2, lr=1e-4, stop_at=0.0, retain_texts=2)
    return rmu_unlearn(h, _capitals("France", "Japan"), _capitals("Germany"), cfg)


def _leace_folded(h):
    from repedit.baselines.leace import leace_facts

    return fold_projection(h, leace_facts(h, _capitals("France", "Japan"), _capitals("Germany", "Italy"), depth=6))


# name -> (builder, needs untied input/output embeddings)
METHODS = {
    "value-vector-zero": (lambda h: value_vector_edit(h, 29, [1321, 697]), False),
    "value-vector-noise": (lambda h: value_vector_edit(h, 29, [1321], mode="noise", noise_std=0.5), False),
    "neuron-suppress": (lambda h: neuron_edit(h, {21: [522], 29: [1285]}, factor=0.0), False),
    "neuron-amplify": (lambda h: neuron_edit(h, {21: [522]}, factor=2.0), False),
    "rocr": (lambda h: ROCR(h, ROCR_TEST_CONFIG).edit("France", "the Republic of Talathia", remember=False), False),
    "mrp-folded": (_mrp_folded, True),
    "pga-folded": (_pga_folded, True),
    "pga-trained": (_pga_trained, False),
    "ga": (_ga, False),
    "sae-align": (_sae_align, False),
    "rmu": (_rmu, False),
    "leace-folded": (_leace_folded, True),
}


@pytest.fixture(scope="module", params=sorted(METHODS))
def made(request, smol):
    build, needs_untied = METHODS[request.param]
    h = request.getfixturevalue("untied") if needs_untied else smol
    return request.param, build(h), h


def test_apply_changes_logits_and_revert_is_bit_exact(made, tmp_path):
    _name, edit, h = made
    w0, l0 = _weights(h), _logits(h)
    stack = EditStack(h)
    entry = stack.push(edit)
    assert (_logits(h) - l0).abs().max() > 1e-4
    assert set(entry.sha_before) == set(edit.params) and entry.sha_before != entry.sha_after
    (back,) = assert_export_roundtrip(h, stack, tmp_path / "out", TEXTS, w0)   # plain transformers, eager
    assert back.params == edit.params
    stack.pop()
    assert _same(_weights(h), w0) and torch.equal(_logits(h), l0)


def test_rank_is_what_it_claims(made):
    _name, edit, h = made
    before = {n: p.detach().double().clone() for n, p in h.model.named_parameters() if n in edit.params}
    with applied(h, edit):
        after = {n: p.detach().double().clone() for n, p in h.model.named_parameters() if n in edit.params}
    for d in edit.deltas:
        diff = after[d.param] - before[d.param]
        assert int(torch.linalg.matrix_rank(diff, rtol=1e-6)) == d.rank == edit.rank[d.param]


def test_merge_equals_hook_form(made):
    name, edit, h = made
    with applied(h, edit):
        merged = _logits(h)
    with hooked(h, edit):
        hook = _logits(h)
    torch.testing.assert_close(hook, merged, atol=2e-4, rtol=1e-4)
    if name.startswith("neuron"):        # and the locator's activation hook gives the same model
        from repedit.backends.base import get_backend

        factor = edit.config["factor"]
        writes = {}
        for layer, units in edit.target["neurons"].items():
            writes.update(neuron_writes(int(layer), units, factor))
        batch = h.encode(TEXTS)
        acts = get_backend(h, "torch").run(batch["input_ids"], batch["attention_mask"], writes=writes).logits
        torch.testing.assert_close(acts, merged, atol=2e-4, rtol=1e-4)


def _with_last(edit, fn):
    """The edit with fn applied to the first factor of its last delta."""
    bad = edit.deltas[-1]
    field_name = "u" if isinstance(bad, LowRankDelta) else "d"
    changed = dataclasses.replace(bad, **{field_name: fn(getattr(bad, field_name).clone())})
    return dataclasses.replace(edit, deltas=edit.deltas[:-1] + (changed,))


def _nan_first(t):
    t[(0,) * t.ndim] = float("nan")
    return t


def test_non_finite_and_mismatched_edits_leave_weights_identical(made):
    _name, edit, h = made
    w0 = _weights(h)
    stack = EditStack(h)
    with pytest.raises(EditError, match="non-finite"):
        stack.push(_with_last(edit, _nan_first))
    wrong_shape = _with_last(edit, lambda t: t[:-1])
    with pytest.raises(EditError):
        stack.push(wrong_shape)
    with pytest.raises(EditError, match="made for"):
        stack.push(dataclasses.replace(edit, model_id="gemma3-270m"))
    assert len(stack) == 0 and _same(_weights(h), w0)


def test_export_reloads_in_plain_transformers_and_reverts(made, tmp_path):
    from transformers import AutoModelForCausalLM

    name, edit, h = made
    w0 = _weights(h)
    stack = EditStack(h)
    stack.push(edit)
    edited = _logits(h)
    res = export(h, tmp_path / "out", stack)
    stack.pop()
    assert res.max_logit_diff <= 1e-5 and not list(tmp_path.glob(".out.tmp*"))
    batch = h.encode(TEXTS)
    # eager is checked in the push/revert test; a plain from_pretrained picks sdpa, which differs by attention arithmetic
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        got = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, edited, atol=1e-3, rtol=0)
    man = read_manifest(tmp_path / "out")
    assert man["edits"][0]["method"] == edit.method and set(man["tensors"]) == set(edit.params)
    assert all(d["rank"] == edit.rank[d["param"]] for d in man["edits"][0]["deltas"])
    # re-applying the stored deltas to the original weights reproduces the export byte for byte
    (again,) = load_edits(tmp_path / "out")
    with applied(h, again):
        for pname, info in man["tensors"].items():
            from repedit.edits.base import tensor_sha256

            assert tensor_sha256(dict(h.model.named_parameters())[pname]) == info["sha256_after"]
    # revert on the plain model restores the original tensors exactly
    revert(tmp_path / "out", plain)
    params = dict(plain.named_parameters())
    assert all(torch.equal(params[p], w0[p]) for p in man["tensors"])
    with pytest.raises(ExportError, match="force"):
        export(h, tmp_path / "out", None)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["format"] == "repedit-export/1"
    assert _same(_weights(h), w0)
