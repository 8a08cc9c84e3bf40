"""The guard on the session's shared models (tests/model_guard.py) sees every kind of change a test can leave
behind, says which, and puts the model back bit for bit; apply + revert is not a change."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repedit
from model_guard import ModelGuard, stride_for
from tiny_models import save_tiny

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)


@pytest.fixture
def tiny(tmp_path):
    return repedit.load(str(save_tiny("llama", tmp_path / "llama")))


def _weights(h):
    return {n: p.detach().clone() for n, p in h.model.named_parameters()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


MATRIX = "model.layers.1.mlp.down_proj.weight"


def _in_place(p):
    with torch.no_grad():
        p.add_(1e-3)


def _row_through_data(p):
    p.data[3] += 1e-3                           # bypasses the version counter


def _replaced(p):
    p.data = p.data + 1e-3


def _rank_one_through_data(p):
    p.data += 1e-3 * torch.outer(torch.ones(p.shape[0]), torch.ones(p.shape[1]))


@pytest.mark.parametrize("write", [_in_place, _row_through_data, _replaced, _rank_one_through_data],
                         ids=["in-place", "row-via-data", "replaced", "rank-one-via-data"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_weight_write_is_named_and_undone(tmp_path, write, dtype):
    h = repedit.load(str(save_tiny("llama", tmp_path / "llama")), dtype=dtype)
    before = _weights(h)
    guard = ModelGuard(h)
    write(dict(h.model.named_parameters())[MATRIX])
    problems = guard.check()
    assert len(problems) == 1 and MATRIX in problems[0], problems
    assert _same(_weights(h), before) and guard.check() == []


def test_gradients_modes_flags_and_hooks_are_named_and_undone(tiny):
    guard = ModelGuard(tiny)
    p = dict(tiny.model.named_parameters())[MATRIX]
    ids = tiny.encode(["a b c"])["input_ids"]
    with torch.enable_grad():
        tiny.model(ids).logits.sum().backward()
    tiny.model.train()
    tiny.model.model.embed_tokens.weight.requires_grad_(False)
    tiny.model.model.layers[0].register_forward_hook(lambda m, a, o: None)
    problems = "\n".join(guard.check())
    assert f"{MATRIX} has a gradient" in problems and "train mode" in problems
    assert "requires_grad is False" in problems
    assert "_forward_hooks holds a hook left behind (test_model_guard)" in problems
    assert p.grad is None and not tiny.model.training and tiny.model.model.embed_tokens.weight.requires_grad
    assert not tiny.model.model.layers[0]._forward_hooks and guard.check() == []


def test_apply_and_revert_is_no_change(tiny):
    from repedit.edits import EditStack
    from repedit.edits.ablate import value_vector_edit

    guard = ModelGuard(tiny)
    stack = EditStack(tiny)
    stack.push(value_vector_edit(tiny, 1, [0, 5]))
    assert any(MATRIX in p for p in guard.check())            # applied: a change (and undone by the guard)
    stack = EditStack(tiny)
    stack.push(value_vector_edit(tiny, 1, [0, 5]))
    stack.pop()
    assert guard.check() == []                                 # applied and reverted: the same bytes


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 3000), cols=st.integers(1, 3000))
def test_the_sample_holds_an_element_of_every_row_and_every_column(rows, cols):
    s = stride_for((rows, cols))
    sampled = torch.arange(0, rows * cols, s)
    assert len(set((sampled // cols).tolist())) == rows and len(set((sampled % cols).tolist())) == cols
