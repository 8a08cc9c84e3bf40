"""REMIND on the toy: after gradient ascent on half the memorised sequences, their input neighbourhoods
still differ from never-seen sequences' although the plain loss hardly tells them apart; a model that
never saw them shows no difference."""

import pytest
import torch

from repedit.errors import ConfigError, InputError
from repedit.verify.remind import RemindConfig, landscape, perturbations, remind

N = 50


@pytest.fixture(scope="module")
def config(toy):
    # the 7 prefix tokens after the first may change; the continuation after the prefix is scored.
    # 32 variants per input: with 8, the AUC below moved 0.74-0.85 with the perturbation seed alone (four seeds,
    # this machine) and was 0.63 on a CPU with other kernels; with 32 it is 0.87-0.91 over four seeds and
    # 0.86-0.87 with the toy's weights perturbed by 1e-3 (relative; three draws), the control 0.42-0.46.
    return RemindConfig(n_perturbations=32, n_changed=3, batch_size=64, stop=toy.extras["toy_config"].prefix_len)


@pytest.fixture(scope="module")
def sets(toy):
    s = toy.extras["sequences"]
    return {"memorised": s["memorised"], "heldout": s["heldout"][:N].tolist()}


def test_remind_sees_residue_after_gradient_ascent(toy, sets, config):
    from unlearn_toy import unlearn

    edited = unlearn(toy, sets["memorised"][:100], steps=10, lr=1e-3)      # half of the 200
    res = remind(edited, sets["memorised"][:N].tolist(), sets["heldout"], config)
    d = res.to_dict()
    # never-seen random sequences sit on a flat landscape; the unlearned ones keep a (shallow) basin
    assert res.auc >= 0.8 and res.direction == "sharper", d
    assert res.loss_auc < res.auc, d                           # the plain loss alone tells them apart less well
    assert d["forget"]["loss"] > 8, d                          # the unlearned items' loss is far from memorised (~0)


def test_remind_control_on_a_model_that_never_saw_them(sets, config):
    import repedit

    reference = repedit.load("toy:memorise-reference")
    res = remind(reference, sets["memorised"][:N].tolist(), sets["heldout"], config)
    assert 0.3 <= res.auc <= 0.7, res.to_dict()


def test_perturbations_change_only_the_allowed_positions(toy, sets, config):
    row = sets["heldout"][0]
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = perturbations(toy, row, config, gen)
    assert len(out) == config.n_perturbations
    for v in out:
        changed = [i for i, (a, b) in enumerate(zip(row, v)) if a != b]
        assert len(v) == len(row) and len(changed) == config.n_changed
        assert all(config.start <= i < config.stop for i in changed)
    again = perturbations(toy, row, config, torch.Generator(device="cpu").manual_seed(0))
    assert again == out                                         # reproducible from the generator
    land = landscape(toy, [row], RemindConfig(n_perturbations=4))
    assert set(land) == {"loss", "mean", "std", "sharpness"} and land["sharpness"].shape == (1,)


@pytest.mark.parametrize("bad", [dict(n_perturbations=0), dict(n_changed=0), dict(neighbours=0), dict(start=0),
                                 dict(stop=3, n_changed=3), dict(batch_size=0), dict(n_perturbations=2.5)])
@pytest.mark.fast
def test_config_is_validated(bad):
    with pytest.raises(ConfigError):
        RemindConfig(**bad)


def test_bad_rows_are_refused(toy):
    with pytest.raises(InputError):
        landscape(toy, [], RemindConfig())
    with pytest.raises(InputError):
        landscape(toy, [[1, 2, 3]], RemindConfig(stop=8))
    with pytest.raises(ConfigError):
        perturbations(toy, list(range(10)), RemindConfig(neighbours=256), torch.Generator(device="cpu"))
