"""The edit contract every edit method passes, shared by the real-model test (tests/test_edit_contract.py)
and the tiny-model fast tier (tests/test_edit_contract_tiny.py). A case is `made`: (name, dtype name, edit,
config or None, handle). Checks: apply changes the logits and revert is bit-exact; the rank is what the edit
claims (exactly in float32; in half precision the applied change equals the claimed-rank change up to half a
unit in the last place of each written value); merged == hook form within the dtype's tolerance; failed edits
leave the bytes identical; the export reloads in plain transformers, reproduces the edited logits, re-applies
byte for byte and reverts exactly; the manifest carries every config field.

A test module imports the `test_*` functions below and provides three fixtures: `made` (a case),
`float32_handle` (a callable giving the same model in float32) and `export_base_id` (the id its manifest names)."""

import dataclasses
import json
from collections.abc import Callable

import pytest
import torch

from conftest import TEST_DEVICE
from repedit.edits import EditError, EditStack, LowRankDelta, applied
from repedit.edits.base import compute_dtype
from repedit.edits.hooks import hooked
from repedit.export.directory import ExportError, export, load_edits, read_manifest, revert
from repedit.forward.weights import tensor_sha256
from repedit.locate.causal import neuron_writes

TEXTS = ["The capital of France is", "Paris is a city in", "The chemical symbol of gold is"]
HOOK_ATOL = 2e-4            # float32: merged and hook forms differ by float32 arithmetic only


def _weights(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def _logits(h):
    batch = h.encode(TEXTS)
    return h.logits(batch["input_ids"], batch["attention_mask"]).float()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def apply_and_revert(made) -> None:
    _name, _dtype, edit, _cfg, h = made
    w0, l0 = _weights(h), _logits(h)
    stack = EditStack(h)
    entry = stack.push(edit)
    assert (_logits(h) - l0).abs().max() > 1e-4
    assert set(entry.sha_before) == set(edit.params) and entry.sha_before != entry.sha_after
    assert all(0 <= r <= 0.5 for r in entry.rounded.values())
    stack.pop()
    assert _same(_weights(h), w0) and torch.equal(_logits(h), l0)


def _half_ulp_bound(value: torch.Tensor) -> torch.Tensor:
    """Largest rounding error of writing a float32 result into `value`'s dtype, per element (+ float32's)."""
    fi = torch.finfo(value.dtype)
    mag = value.double().abs()
    return mag * (fi.eps / 2 + 2.0 ** -23) * 1.01 + fi.tiny * fi.eps


def rank_as_claimed(made) -> None:
    _name, dtype, edit, _cfg, h = made
    before = {n: p.detach().clone() for n, p in h.model.named_parameters() if n in edit.params}
    with applied(h, edit):
        after = {n: p.detach().clone() for n, p in h.model.named_parameters() if n in edit.params}
    for d in edit.deltas:
        diff = after[d.param].double() - before[d.param].double()
        if dtype == "float32":
            assert int(torch.linalg.matrix_rank(diff, rtol=1e-6)) == d.rank == edit.rank[d.param]
            continue
        intended = d.change(before[d.param]).double()                  # float32 maths, the claimed-rank change
        assert compute_dtype(before[d.param]) == torch.float32
        if isinstance(d, LowRankDelta):                                 # rank(U Vᵀ) = rank(R_U R_Vᵀ), r × r
            small = torch.linalg.qr(d.u.double())[1] @ torch.linalg.qr(d.v.double())[1].T
            assert int(torch.linalg.matrix_rank(small, rtol=1e-6)) == d.rank == edit.rank[d.param]
        elif intended.ndim == 2:
            assert int(torch.linalg.matrix_rank(intended, rtol=1e-5)) == d.rank == edit.rank[d.param]
        assert ((diff - intended).abs() <= _half_ulp_bound(after[d.param])).all(), d.param


def merge_equals_hook_form(made, float32_handle: Callable) -> None:
    name, dtype, edit, _cfg, h = made
    error = None if dtype == "float32" else dtype_error(h, float32_handle)
    with applied(h, edit):
        merged = _logits(h)
    with hooked(h, edit):
        hook = _logits(h)
    assert_same_model(hook, merged, dtype, error)
    if name.startswith("neuron"):        # and the locator's activation hook gives the same model
        from repedit.backends.base import get_backend

        factor = edit.config["factor"]
        writes = {}
        for layer, units in edit.target["neurons"].items():
            writes.update(neuron_writes(int(layer), units, factor))
        batch = h.encode(TEXTS)
        with torch.no_grad():
            acts = get_backend(h, "torch").run(batch["input_ids"], batch["attention_mask"], writes=writes).logits
        assert_same_model(acts.float(), merged, dtype, error)


_DTYPE_ERROR: dict = {}


def dtype_error(h, float32_handle: Callable) -> tuple[float, float]:
    """(max, mean) |logits| difference between the unedited model in h's dtype and in float32: what
    the dtype itself costs, the yardstick for 'equal within the dtype's tolerance'."""
    if h.dtype not in _DTYPE_ERROR:
        diff = (_logits(h) - _logits(float32_handle()).to(h.input_device)).abs()
        _DTYPE_ERROR[h.dtype] = (float(diff.max()), float(diff.mean()))
    return _DTYPE_ERROR[h.dtype]


def assert_same_model(a: torch.Tensor, b: torch.Tensor, dtype: str, error: tuple[float, float] | None) -> None:
    """Logits of two forms of one model agree within the dtype's tolerance. float32: 2e-4 absolute.
    Half precision: the merged form rounds each written weight once more than the hook form (folded
    projections write up to 2·depth + 1 matrices); that costs at most three times the largest and twice the
    mean logit error the dtype costs the unedited model against float32. Measured (merged vs hook, dtype's
    own): LEACE folded at depth 6, bf16 max 0.89 / 1.47, mean 0.162 / 0.161; fp16 max 0.148 / 0.087, mean
    0.019 / 0.017; LEACE-pool (oblique, larger changes) bf16 max 1.63 / 1.47, mean 0.181 / 0.161; fp16
    max 0.238 / 0.087, mean 0.027 / 0.017 — the single largest of all the logits compared is the noisier statistic."""
    if dtype == "float32":
        torch.testing.assert_close(a, b, atol=HOOK_ATOL, rtol=1e-4)
        return
    diff = (a - b).abs()
    assert float(diff.max()) <= 3 * error[0], (float(diff.max()), error)
    assert float(diff.mean()) <= 2 * error[1], (float(diff.mean()), error)


def _with_last(edit, fn):
    """The edit with fn applied to the first factor of its last delta."""
    bad = edit.deltas[-1]
    field_name = "u" if isinstance(bad, LowRankDelta) else "d" if hasattr(bad, "d") else "q"
    changed = dataclasses.replace(bad, **{field_name: fn(getattr(bad, field_name).clone())})
    return dataclasses.replace(edit, deltas=edit.deltas[:-1] + (changed,))


def _nan_first(t):
    t[(0,) * t.ndim] = float("nan")
    return t


def failed_edits_leave_weights_identical(made) -> None:
    _name, _dtype, edit, _cfg, h = made
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


def export_reloads_and_reverts(made, tmp_path, base_id: str) -> None:
    from transformers import AutoModelForCausalLM

    name, dtype, edit, cfg, h = made
    w0 = _weights(h)
    stack = EditStack(h)
    stack.push(edit)
    edited = _logits(h)
    res = export(h, tmp_path / "out", stack)
    stack.pop()
    assert res.max_logit_diff <= 1e-5 and not list(tmp_path.glob(".out.tmp*"))
    batch = h.encode(TEXTS)
    placement = {} if TEST_DEVICE == "cpu" else {"device_map": {"": TEST_DEVICE}}
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager", **placement).eval()
    assert next(plain.parameters()).dtype == getattr(torch, dtype)             # saved and reloaded in its own dtype
    with torch.no_grad():
        got = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    torch.testing.assert_close(got, edited, atol=1e-5, rtol=0)
    man = read_manifest(tmp_path / "out")
    base = man["base_model"]                                            # by hub id, not by the cache path
    assert base["id"] == base_id and "source" not in base             # by hub id or a local dir's name
    assert json.loads((tmp_path / "out" / "config.json").read_text())["_name_or_path"] == base["id"]
    rec = man["edits"][0]
    assert rec["method"] == edit.method and set(man["tensors"]) == set(edit.params)
    assert all(man["tensors"][p]["dtype"] == dtype for p in edit.params)
    assert all(d["rank"] == edit.rank[d["param"]] for d in rec["deltas"])
    if cfg is not None:                                                 # the full config: class and every field
        assert rec["config"]["class"] == type(cfg).__name__
        fields = {f.name for f in dataclasses.fields(cfg)} - {"objective"}
        assert fields <= set(rec["config"]), fields - set(rec["config"])
    # re-applying the stored deltas to the original weights reproduces the export byte for byte
    (again,) = load_edits(tmp_path / "out")
    with applied(h, again):
        for pname, info in man["tensors"].items():
            assert tensor_sha256(dict(h.model.named_parameters())[pname]) == info["sha256_after"]
    # revert on the plain model restores the original tensors exactly
    revert(tmp_path / "out", plain)
    params = dict(plain.named_parameters())
    assert all(torch.equal(params[p], w0[p]) for p in man["tensors"])
    with pytest.raises(ExportError, match="force"):
        export(h, tmp_path / "out", None)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["format"] == "repedit-export/1"
    assert _same(_weights(h), w0)


def test_apply_changes_logits_and_revert_is_bit_exact(made):
    apply_and_revert(made)


def test_rank_is_what_it_claims(made):
    rank_as_claimed(made)


def test_merge_equals_hook_form(made, float32_handle):
    merge_equals_hook_form(made, float32_handle)


def test_non_finite_and_mismatched_edits_leave_weights_identical(made):
    failed_edits_leave_weights_identical(made)


def test_export_reloads_in_plain_transformers_and_reverts(made, tmp_path, export_base_id):
    export_reloads_and_reverts(made, tmp_path, export_base_id)
