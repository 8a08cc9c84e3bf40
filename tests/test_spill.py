"""Large saved copies go to a temporary file and come back bit for bit (the relearning attack's whole-model
restore no longer holds a second model in memory)."""

import pytest
import torch

from repedit.fit.training import training_only
from repedit.forward import spill
from repedit.forward.spill import Spilled, saved_copy

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)


def test_spilled_tensors_come_back_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(7, 5, generator=g), "b": torch.randn(3, 4, generator=g).bfloat16(),
               "c": torch.arange(6).view(2, 3), "d": torch.randn(4, generator=g).half()}
    saved = Spilled(tensors)
    assert sorted(saved) == sorted(tensors) and len(saved) == 4
    for name, t in tensors.items():
        back = saved[name]
        assert back.dtype == t.dtype and back.shape == t.shape and torch.equal(back, t)
    saved.close()


@pytest.mark.real
def test_a_whole_model_fine_tune_restores_every_weight_from_the_spill(smol, monkeypatch):
    monkeypatch.setattr(spill, "SPILL_BYTES", 1)                  # spill even a small save
    names = [n for n, _ in smol.model.named_parameters()][:6]
    before = {n: p.detach().clone() for n, p in smol.model.named_parameters() if n in names}
    assert isinstance(saved_copy({n: before[n] for n in names}), Spilled)
    with training_only(smol, names) as trainable:
        assert isinstance(trainable.originals, Spilled)
        with torch.no_grad():
            for p in trainable.params.values():
                p.add_(1.0)                                         # the fine-tune moved every weight
        assert torch.equal(trainable.originals[names[0]], before[names[0]])
    for n, p in smol.model.named_parameters():
        if n in names:
            assert torch.equal(p, before[n]), n
