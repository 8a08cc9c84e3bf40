"""Half precision and devices: transactional writes in bf16, edits the dtype rounds away, byte hashes of
any dtype, key statistics keyed by what they depend on, and the device trap itself."""

import hashlib
from pathlib import Path

import pytest
import torch

import repedit
from repedit.devicecheck import DeviceRuleError, factory_trap
from repedit.edits import EditError, EditStack, LowRankDelta
from repedit.edits.ablate import value_vector_edit
from repedit.edits.base import Edit, PrecisionError
from repedit.edits.key_stats import stats_path
from repedit.forward.weights import tensor_sha256


def _state(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def _unchanged(h, w0):
    return all(torch.equal(w0[k], v) for k, v in h.model.state_dict().items())


def test_a_failure_after_the_write_restores_the_bf16_bytes(model_in, monkeypatch):
    h = model_in(torch.bfloat16)
    w0 = _state(h)
    edit = value_vector_edit(h, 29, [1321, 697])

    def fail(*_a, **_k):
        raise RuntimeError("injected after the write")

    monkeypatch.setattr(EditStack, "_check_written", staticmethod(fail))
    stack = EditStack(h)
    with pytest.raises(EditError, match="weights restored"):
        stack.push(edit)
    assert len(stack) == 0 and _unchanged(h, w0)
    monkeypatch.undo()
    entry = stack.push(edit)                                  # the same edit applies cleanly afterwards
    assert entry.sha_before[edit.params[0]] == tensor_sha256(w0[edit.params[0]])
    assert not _unchanged(h, w0)
    stack.pop()
    assert _unchanged(h, w0)


def test_an_edit_the_dtype_rounds_away_raises_and_changes_nothing(model_in):
    bf16, fp32 = model_in(torch.bfloat16), model_in(torch.float32)
    name = bf16.matrix("mlp_out", 20).name
    g = torch.Generator(device="cpu").manual_seed(0)
    u = 1e-5 * torch.randn(bf16.d_model, 1, generator=g, device="cpu")    # far below bf16's spacing near W
    v = torch.randn(bf16.d_mlp, 1, generator=g, device="cpu")
    w0 = _state(bf16)
    with pytest.raises(PrecisionError, match="float32"):
        EditStack(bf16).push(Edit("tiny", (LowRankDelta(name, u, v),), bf16.id))
    assert _unchanged(bf16, w0)
    stack = EditStack(fp32)                                                  # float32 keeps it
    entry = stack.push(Edit("tiny", (LowRankDelta(name, u, v),), fp32.id))
    assert entry.rounded[name] < 0.1
    stack.pop()
    big = EditStack(bf16).push(Edit("big", (LowRankDelta(name, 1e3 * u, v),), bf16.id))  # survives bf16
    assert big.rounded[name] < 0.1
    with torch.no_grad():
        bf16.matrix("mlp_out", 20).param.copy_(w0[name])


@pytest.mark.fast
def test_sha256_reads_the_bytes_of_any_dtype():
    x = torch.linspace(-1, 1, 101, dtype=torch.float32, device="cpu")
    assert tensor_sha256(x) == hashlib.sha256(x.numpy().tobytes()).hexdigest()   # float32 hashes unchanged
    for dtype in (torch.bfloat16, torch.float16, torch.int64, torch.bool):
        assert tensor_sha256(x.to(dtype)) == tensor_sha256(x.to(dtype).clone())
    b = x.to(torch.bfloat16)
    one_ulp = b.clone()
    one_ulp.view(torch.int16)[7] += 1                                         # the smallest change bf16 can hold
    assert tensor_sha256(b) != tensor_sha256(one_ulp)
    assert tensor_sha256(b) != tensor_sha256(x.to(torch.float16))


def test_key_statistics_are_keyed_by_weights_dtype_and_corpus(model_in):
    fp32, bf16 = model_in(torch.float32), model_in(torch.bfloat16)
    p5, p2 = stats_path(fp32, 5, 6000), stats_path(fp32, 2, 6000)
    assert stats_path(bf16, 5, 6000) != p5 and "bfloat16" in stats_path(bf16, 5, 6000).name
    assert stats_path(fp32, 5, 6000, corpus="kjv") != p5 and stats_path(fp32, 5, 6000, context=64) != p5
    stack = EditStack(fp32)
    stack.push(value_vector_edit(fp32, 3, [7]))                    # an edit of layer 3
    assert stats_path(fp32, 5, 6000) != p5                            # reaches layer 5: new statistics
    assert stats_path(fp32, 2, 6000) == p2                            # cannot reach layer 2: reused
    stack.pop()
    assert stats_path(fp32, 5, 6000) == p5                            # the original weights again


@pytest.mark.fast
def test_the_device_trap_flags_factories_without_a_device_in_repedit_code_only(device_rule):
    inside = str(Path(repedit.__file__).parent / "pretend_module.py")      # code compiled as repedit's
    bad = compile("torch.zeros(3)", inside, "exec")
    good = compile("torch.zeros(3, device='cpu'); torch.as_tensor(torch.ones(2, device='cpu'))", inside, "exec")
    strict = device_rule.strict
    device_rule.strict = False                     # the suite-wide trap (conftest) would stop the first call
    try:
        with factory_trap(strict=False) as trap:
            exec(good, {"torch": torch})
            exec(bad, {"torch": torch})
            torch.zeros(3)                                                   # the test's own code: not flagged
        assert list(trap.found.values()) == ["zeros"] and "pretend_module.py:1" in next(iter(trap.found))
        with pytest.raises(DeviceRuleError, match="without device="), factory_trap(strict=True):
            exec(bad, {"torch": torch})
    finally:
        device_rule.strict = strict
        for key in [k for k in device_rule.found if "pretend_module" in k]:
            del device_rule.found[key]
