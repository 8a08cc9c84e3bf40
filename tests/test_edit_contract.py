"""The shared contract every edit method passes (on the real default model)."""

import dataclasses
import json

import pytest
import torch

from repedit.edits import EditError, EditStack, LowRankDelta, applied
from repedit.edits.ablate import neuron_edit, value_vector_edit
from repedit.edits.hooks import hooked
from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.export import ExportError, export, load_edits, read_manifest, revert
from repedit.locate.causal import neuron_writes

TEXTS = ["The capital of France is", "Paris is a city in", "The chemical symbol of gold is"]
ROCR_TEST_CONFIG = ROCRConfig(stats_tokens=6_000)


def _weights(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def _logits(h):
    batch = h.encode(TEXTS)
    return h.logits(batch["input_ids"], batch["attention_mask"])


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


METHODS = {
    "value-vector-zero": lambda h: value_vector_edit(h, 29, [1321, 697]),
    "value-vector-noise": lambda h: value_vector_edit(h, 29, [1321], mode="noise", noise_std=0.5),
    "neuron-suppress": lambda h: neuron_edit(h, {21: [522], 29: [1285]}, factor=0.0),
    "neuron-amplify": lambda h: neuron_edit(h, {21: [522]}, factor=2.0),
    "rocr": lambda h: ROCR(h, ROCR_TEST_CONFIG).edit("France", "the Republic of Talathia", remember=False),
}


@pytest.fixture(scope="module", params=sorted(METHODS))
def made(request, smol):
    return request.param, METHODS[request.param](smol)


def test_apply_changes_logits_and_revert_is_bit_exact(smol, made):
    _name, edit = made
    w0, l0 = _weights(smol), _logits(smol)
    stack = EditStack(smol)
    entry = stack.push(edit)
    assert (_logits(smol) - l0).abs().max() > 1e-4
    assert set(entry.sha_before) == set(edit.params) and entry.sha_before != entry.sha_after
    stack.pop()
    assert _same(_weights(smol), w0) and torch.equal(_logits(smol), l0)


def test_rank_is_what_it_claims(smol, made):
    _name, edit = made
    before = {n: p.detach().double().clone() for n, p in smol.model.named_parameters() if n in edit.params}
    with applied(smol, edit):
        after = {n: p.detach().double().clone() for n, p in smol.model.named_parameters() if n in edit.params}
    for d in edit.deltas:
        diff = after[d.param] - before[d.param]
        assert int(torch.linalg.matrix_rank(diff, rtol=1e-6)) == d.rank == edit.rank[d.param]


def test_merge_equals_hook_form(smol, made):
    name, edit = made
    with applied(smol, edit):
        merged = _logits(smol)
    with hooked(smol, edit):
        hook = _logits(smol)
    torch.testing.assert_close(hook, merged, atol=2e-4, rtol=1e-4)
    if name.startswith("neuron"):        # and the locator's activation hook gives the same model
        from repedit.backends.base import get_backend

        factor = edit.config["factor"]
        writes = {}
        for layer, units in edit.target["neurons"].items():
            writes.update(neuron_writes(int(layer), units, factor))
        batch = smol.encode(TEXTS)
        acts = get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"], writes=writes).logits
        torch.testing.assert_close(acts, merged, atol=2e-4, rtol=1e-4)


def test_non_finite_and_mismatched_edits_leave_weights_identical(smol, made):
    _name, edit = made
    w0 = _weights(smol)
    bad = edit.deltas[-1]
    nan_u = bad.u.clone()
    nan_u[0, 0] = float("nan")
    poisoned = dataclasses.replace(edit, deltas=edit.deltas[:-1] + (LowRankDelta(bad.param, nan_u, bad.v),))
    stack = EditStack(smol)
    with pytest.raises(EditError, match="non-finite"):
        stack.push(poisoned)
    wrong_shape = dataclasses.replace(edit, deltas=edit.deltas[:-1] + (LowRankDelta(bad.param, bad.u[:-1], bad.v),))
    with pytest.raises(EditError):
        stack.push(wrong_shape)
    with pytest.raises(EditError, match="made for"):
        stack.push(dataclasses.replace(edit, model_id="gemma3-270m"))
    assert len(stack) == 0 and _same(_weights(smol), w0)


def test_export_reloads_in_plain_transformers_and_reverts(smol, made, tmp_path):
    from transformers import AutoModelForCausalLM

    name, edit = made
    w0 = _weights(smol)
    stack = EditStack(smol)
    stack.push(edit)
    edited = _logits(smol)
    res = export(smol, tmp_path / "out", stack)
    stack.pop()
    assert res.max_logit_diff <= 1e-5 and not list(tmp_path.glob(".out.tmp*"))
    batch = smol.encode(TEXTS)
    for attn, atol in (("eager", 1e-5), ("sdpa", 1e-3)):     # repedit runs eager; plain users get sdpa
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation=attn).eval()
        with torch.no_grad():
            got = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(got, edited, atol=atol, rtol=0)
    man = read_manifest(tmp_path / "out")
    assert man["edits"][0]["method"] == edit.method and set(man["tensors"]) == set(edit.params)
    assert all(d["rank"] == edit.rank[d["param"]] for d in man["edits"][0]["deltas"])
    # re-applying the stored deltas to the original weights reproduces the export byte for byte
    (again,) = load_edits(tmp_path / "out")
    with applied(smol, again):
        for pname, info in man["tensors"].items():
            from repedit.edits.base import tensor_sha256

            assert tensor_sha256(dict(smol.model.named_parameters())[pname]) == info["sha256_after"]
    # revert on the plain model restores the original tensors exactly
    revert(tmp_path / "out", plain)
    params = dict(plain.named_parameters())
    assert all(torch.equal(params[p], w0[p]) for p in man["tensors"])
    with pytest.raises(ExportError, match="force"):
        export(smol, tmp_path / "out", None)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["format"] == "repedit-export/1"
    assert _same(_weights(smol), w0)
