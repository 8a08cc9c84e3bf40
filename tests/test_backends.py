"""One conformance suite for every backend: captured activations equal the model's own values.

Tolerance: 1e-5 absolute (measured: bit-identical for torch/nnsight; ≤1e-7 for the
TransformerBridge on GPT-2), checked against HF `hidden_states` and against the torch backend.
"""

import pytest
import torch

import repedit
from repedit.backends.base import get_backend
from repedit.errors import SiteNotFoundError
from repedit.sites import Point

BACKENDS = ["torch", "lens", "nnsight"]
ATOL = 1e-5
TEXTS = ["The Eiffel Tower is in Paris.", "Hello", "Water boils at one hundred degrees"]


def _all_points(layers):
    return [(layer, p) for layer in layers for p in Point]


def _hooks_installed(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("backend", BACKENDS)
def test_conformance_default_model(smol, backend):
    batch = smol.encode(TEXTS)
    with torch.no_grad():
        hs = smol.model(**batch, output_hidden_states=True).hidden_states
    keys = _all_points([0, 14, 28])
    ref = get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"], reads=keys)
    res = get_backend(smol, backend).run(batch["input_ids"], batch["attention_mask"], reads=keys)
    for layer in (0, 14, 28):
        torch.testing.assert_close(res.acts[(layer, Point.RESID_POST)], hs[layer + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(res.acts[(layer, Point.RESID_PRE)], hs[layer], atol=ATOL, rtol=0)
    for k in keys:
        torch.testing.assert_close(res.acts[k], ref.acts[k], atol=ATOL, rtol=0)
    # the decomposition holds: resid_post = resid_pre + attn_out + mlp_out
    for layer in (0, 14, 28):
        a = res.acts
        torch.testing.assert_close(a[(layer, Point.RESID_PRE)] + a[(layer, Point.ATTN_OUT)] + a[(layer, Point.MLP_OUT)],
                                   a[(layer, Point.RESID_POST)], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(res.logits, ref.logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_writes_agree_across_backends(smol, backend):
    batch = smol.encode(TEXTS[:2])
    writes = {(2, Point.MLP_OUT): lambda x: x * 0, (4, Point.MLP_HIDDEN): lambda x: x * 2}
    read = [(6, Point.RESID_POST)]
    ref = get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"], reads=read, writes=writes)
    res = get_backend(smol, backend).run(batch["input_ids"], batch["attention_mask"], reads=read, writes=writes)
    clean = get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"], reads=read)
    torch.testing.assert_close(res.acts[read[0]], ref.acts[read[0]], atol=ATOL, rtol=0)
    assert (res.acts[read[0]] - clean.acts[read[0]]).abs().max() > 1.0  # the write really happened


@pytest.mark.parametrize("backend", BACKENDS)
def test_conformance_toy(toy, backend):
    seqs = toy.extras["sequences"]["memorised"][:4]
    _, cache = toy.model.run_with_cache(seqs)
    res = get_backend(toy, backend).run(seqs, None, reads=_all_points([0, 3]))
    names = {Point.RESID_PRE: "hook_resid_pre", Point.RESID_POST: "hook_resid_post", Point.ATTN_OUT: "hook_attn_out",
             Point.MLP_HIDDEN: "mlp.hook_post", Point.MLP_OUT: "hook_mlp_out"}
    for (layer, p), v in res.acts.items():
        torch.testing.assert_close(v, cache[f"blocks.{layer}.{names[p]}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.fast
def test_tiny_architectures(tiny_dirs, backend):
    for arch, path in tiny_dirs.items():
        h = repedit.models.load_hf(path)
        batch = h.encode(["hello world", "the cat sat on the mat"])
        with torch.no_grad():
            hs = h.model(**batch, output_hidden_states=True).hidden_states
        keys = _all_points([1])
        ref = get_backend(h, "torch").run(batch["input_ids"], batch["attention_mask"], reads=keys)
        res = get_backend(h, backend).run(batch["input_ids"], batch["attention_mask"], reads=keys)
        torch.testing.assert_close(res.acts[(1, Point.RESID_POST)], hs[2], atol=ATOL, rtol=0, msg=arch)
        for k in keys:
            torch.testing.assert_close(res.acts[k], ref.acts[k], atol=ATOL, rtol=0, msg=f"{arch} {k}")


@pytest.mark.parametrize("backend", ["torch", "lens"])
def test_hooks_removed_even_when_a_hook_raises(smol, backend):
    be = get_backend(smol, backend)
    model = be.model if backend == "lens" else smol.model
    before = _hooks_installed(model)
    batch = smol.encode(TEXTS[:1])
    with pytest.raises(ZeroDivisionError):
        be.run(batch["input_ids"], batch["attention_mask"], reads=[(5, Point.RESID_POST)],
               writes={(3, Point.MLP_OUT): lambda x: x / 0 if False else 1 / 0})
    assert _hooks_installed(model) == before
    clean = smol.logits(**batch)
    again = be.run(batch["input_ids"], batch["attention_mask"]).logits
    torch.testing.assert_close(again, clean, atol=1e-4, rtol=0)


def test_nnsight_leaves_no_effect_after_exception(smol):
    be = get_backend(smol, "nnsight")
    batch = smol.encode(TEXTS[:1])
    with pytest.raises(Exception):
        be.run(batch["input_ids"], batch["attention_mask"], writes={(3, Point.MLP_OUT): lambda x: 1 / 0})
    torch.testing.assert_close(be.run(batch["input_ids"], batch["attention_mask"]).logits,
                               smol.logits(**batch), atol=1e-4, rtol=0)


def test_early_stop_and_bad_sites(smol):
    batch = smol.encode(TEXTS[:1])
    res = get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"],
                                         reads=[(3, Point.RESID_POST)], stop_early=True)
    assert res.logits is None and (3, Point.RESID_POST) in res.acts
    with pytest.raises(SiteNotFoundError):
        get_backend(smol, "torch").run(batch["input_ids"], batch["attention_mask"], reads=[(31, Point.RESID_POST)])
    with pytest.raises(SiteNotFoundError):
        get_backend(smol, "pyvene")
