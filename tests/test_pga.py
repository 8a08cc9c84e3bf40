"""Closed-form PGA, MD-PGA and adversarial PGA (hook form) judged by the signature's probes."""

import pytest
import torch

from repedit.edits.pga import adversarial_pga, pga, refit_loo
from repedit.errors import InputError
from repedit.fit.pool_features import pool_features
from repedit.suites.pools import toy_pool
from repedit.verify.signature import depth_curve


@pytest.fixture(scope="module")
def toy_setup(toy):
    pool = toy_pool(toy)
    depth = toy.n_layers
    return pool, depth, pool_features(toy, pool, depths=[depth], progress=False)


def test_pga_removes_the_probe_direction(toy, toy_setup):
    pool, depth, feats = toy_setup
    before, _ = depth_curve(feats)
    proj = pga(feats, depth=depth)
    assert proj.k == 1 and torch.allclose(proj.U.T @ proj.U, torch.eye(1), atol=1e-5)
    after = refit_loo(toy, pool, proj)
    assert before.true_loo[0] > 0.65 and after < before.true_loo[0] - 0.05
    # the rewrite is idempotent and leaves no component along U (standardised frame)
    x = torch.randn(5, toy.d_model)
    once = proj.rewrite(x)
    torch.testing.assert_close(proj.rewrite(once), once, atol=1e-4, rtol=1e-4)
    z = (once - proj.mu) / proj.scale
    assert (z @ proj.U).abs().max() < 1e-3


def test_md_pga_and_adversarial_drive_the_refit_probe_down(toy, toy_setup):
    pool, depth, feats = toy_setup
    md = pga(feats, depth=depth, k=4, method="md")
    assert md.k == 4 and torch.allclose(md.U.T @ md.U, torch.eye(4), atol=1e-4)
    adv = adversarial_pga(toy, pool, depth=depth, max_rounds=7)
    accs = [a for _r, a, _k in adv.history]
    assert accs[-1] < accs[0] and (accs[-1] < 0.55 or len(accs) == 7), adv.history
    assert adv.k == adv.history[-1][2]
    base = toy.logits(torch.tensor([pool.keys[0].memorised]))
    with adv.active(toy):
        hooked = toy.logits(torch.tensor([pool.keys[0].memorised]))
    assert not torch.equal(hooked, base)
    assert torch.equal(toy.logits(torch.tensor([pool.keys[0].memorised])), base)     # hook removed


def test_pga_validates(toy_setup):
    _pool, depth, feats = toy_setup
    with pytest.raises(InputError):
        pga(feats, depth=depth, k=2, method="pga")
    with pytest.raises(InputError):
        pga(feats, depth=depth, method="lasso")
    with pytest.raises(InputError):
        pga(feats, depth=depth - 1)


def test_leace_erases_the_linear_signal_and_folds_like_pga(toy, toy_setup):
    """The LEACE baseline leaves a fresh linear probe at chance where the signature was clear."""
    from repedit.baselines.leace import fit_leace, leace_pool

    pool, depth, feats = toy_setup
    before, _ = depth_curve(feats)
    erasure = leace_pool(feats, depth=depth)
    assert before.true_loo[0] > 0.65 and refit_loo(toy, pool, erasure) < 0.6
    A, B = erasure.factors()
    torch.testing.assert_close(B.T @ A, torch.eye(erasure.k, dtype=A.dtype), atol=1e-6, rtol=0)   # a projection
    with pytest.raises(InputError, match="two label classes"):
        fit_leace(torch.randn(6, 4), [1] * 6, depth)
