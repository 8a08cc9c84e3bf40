"""The memorisation signature: closed-form LOO, controls, real-model gap, attackers, regimes."""

import json

import numpy as np
import pytest
import torch

from repedit.errors import InputError, SuiteNotFoundError
from repedit.fit.group_loo import logistic_group_loo, naive_ridge_group_loo, ridge_group_loo, standardise
from repedit.fit.pool_features import CONTEXTS, pool_features
from repedit.fit.pool_screen import screen, screened
from repedit.sites import Point
from repedit.suites.pools import Pool, PoolKey, load_pool, toy_pool
from repedit.verify.probe_attacks import PROBE_VARIANTS, probe_variants_attack, refit_attack
from repedit.verify.regimes import inject_secrets, natural_vs_injected
from repedit.verify.signature import SignatureResult, signature


def _blobs(seed=0, groups=6, per=16, d=40):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(groups * per, d))
    y = np.tile(np.repeat([1, 0], per // 2), groups)
    X[y == 1, :3] += 0.8
    return X, y, np.repeat(np.arange(groups), per)


@pytest.mark.fast
def test_closed_form_loo_equals_naive_refit():
    X, y, g = _blobs()
    Xs = standardise(X)
    fast = ridge_group_loo(Xs, 2.0 * y - 1, g, alpha=3.0)
    naive = naive_ridge_group_loo(Xs, 2.0 * y - 1, g, alpha=3.0)
    np.testing.assert_allclose(fast, naive, rtol=1e-7, atol=1e-9)
    # several label vectors at once give the same columns as one at a time
    Y = np.stack([2.0 * y - 1, np.random.default_rng(1).permutation(2.0 * y - 1)], 1)
    both = ridge_group_loo(Xs, Y, g, alpha=3.0)
    np.testing.assert_allclose(both[:, 1], naive_ridge_group_loo(Xs, Y[:, 1], g, alpha=3.0), atol=1e-9)
    # n < d (more features than rows) is still exact
    Xw, yw, gw = _blobs(d=200, per=8)
    np.testing.assert_allclose(ridge_group_loo(Xw, 2.0 * yw - 1, gw, alpha=0.5),
                               naive_ridge_group_loo(Xw, 2.0 * yw - 1, gw, alpha=0.5), atol=1e-7)


@pytest.mark.fast
def test_warm_started_logistic_matches_cold_refit():
    X, y, g = _blobs(seed=2)
    warm = logistic_group_loo(standardise(X), y, g, warm=True, tol=1e-10)
    cold = logistic_group_loo(standardise(X), y, g, warm=False, tol=1e-10)
    np.testing.assert_allclose(warm, cold, atol=1e-5)


@pytest.mark.fast
def test_loo_input_validation():
    X, y, g = _blobs()
    with pytest.raises(InputError):
        ridge_group_loo(X, y, np.zeros(len(y)))            # one group only
    with pytest.raises(InputError):
        ridge_group_loo(X, y, g, alpha=0.0)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError):
        ridge_group_loo(bad, y, g)


@pytest.mark.fast
def test_pool_validation_and_errors():
    with pytest.raises(SuiteNotFoundError, match="natural"):
        load_pool("naturall")
    k = PoolKey("a", "x y z", "p q r", "s t u")
    with pytest.raises(InputError, match="at least 3"):
        Pool("p", (k, k))
    pool = load_pool("natural")
    assert len(pool) >= 20 and all(k.memorised != k.paraphrase_c != k.paraphrase_b for k in pool.keys)


def test_screening_separates_memorised_text(smol):
    pool = load_pool("natural")
    rep = screen(smol, pool)
    rows = {r.key: r for r in rep.rows}
    assert len(rep.passing) >= 8                                 # the floor
    # the memorised text is far more predictable than its paraphrases for every passing key
    for key in rep.passing:
        r = rows[key]
        assert r.memorised - max(r.paraphrase_c, r.paraphrase_b) > 1.0
    assert rows["declaration"].passed and not rows["moby-dick"].passed
    with pytest.raises(InputError):
        screen(smol, pool, theta_m=-3.0, theta_c=-2.0)


@pytest.fixture(scope="module")
def smol_signature(smol):
    pool, _ = screened(smol, load_pool("natural"))
    return signature(smol, pool, contexts=CONTEXTS[:8], shuffle_seeds=range(3), progress=False)


def test_default_model_gap_positive_and_controls_flat(smol_signature, tmp_path):
    res = smol_signature
    assert res.depths == list(range(31)) and res.n_views == 8
    lo, _hi = res.curve.gap_ci[res.peak_index]
    assert res.peak_gap > 0.2 and lo > 0.0, res.table()        # memorisation-specific signal somewhere
    assert res.curve.true_loo[res.peak_index] > 0.7, res.table()
    shuf = np.array(res.shuffled_true_loo)
    assert np.all(np.abs(shuf.mean(0) - 0.5) < 0.06), res.table()   # shuffled labels sit at chance
    rnd = np.array(res.random_init.gap)
    assert np.abs(rnd).mean() < 0.06 and rnd.max() < res.peak_gap / 2, res.table()
    # JSON round trip and plot
    back = SignatureResult.from_json(res.save_json(tmp_path / "s.json"))
    assert back.curve.gap == res.curve.gap and back.peak_depth == res.peak_depth
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["peak_depth"] == res.peak_depth
    assert res.plot(tmp_path / "s.png").stat().st_size > 10_000


def test_toy_signature_and_shuffled_control(toy):
    res = signature(toy, toy_pool(toy), shuffle_seeds=range(5), progress=False)
    assert res.peak_depth == toy.n_layers and res.peak_gap > 0.15, res.table()
    assert res.curve.gap_ci[res.peak_index][0] > 0
    assert np.all(np.abs(np.mean(res.shuffled_true_loo, axis=0) - 0.5) < 0.04), res.table()
    assert max(abs(g) for g in res.random_init.gap) < 0.12, res.table()


def test_contexts_are_validated(toy, smol):
    pool = toy_pool(toy, n_keys=4)
    with pytest.raises(InputError):
        pool_features(toy, pool, contexts=[0, 40])
    with pytest.raises(InputError, match="text"):
        pool_features(smol, load_pool("natural"), contexts=["no placeholder"])
    with pytest.raises(InputError):
        pool_features(toy, pool, depths=[toy.n_layers + 1])


def test_attackers_run_on_unedited_and_edited_models(toy):
    pool = toy_pool(toy)
    depth = toy.n_layers
    before = probe_variants_attack(toy, pool, depths=[depth])
    assert before.variants == [v.name for v in PROBE_VARIANTS] and len(PROBE_VARIANTS) == 6
    assert min(a[0] for a in before.accuracy) > 0.65, before.table()
    # a hook-form edit that erases the final residual: every variant falls to chance
    erase = {(depth - 1, Point.RESID_POST): lambda h: torch.zeros_like(h)}
    after = probe_variants_attack(toy, pool, depths=[depth], writes=erase)
    assert after.best <= 0.55, after.table()
    refit = refit_attack(toy, pool, depths=[depth], original=toy, writes=erase)
    assert refit.best <= 0.55 and refit.transfer[0] <= 0.55
    # a weight-edited (fine-tuned) model: the attackers run and the original probe still transfers
    inj = inject_secrets(toy, n_secrets=8, progress=False)
    refit2 = refit_attack(inj.handle, pool, depths=[depth], original=toy)
    assert refit2.accuracy[0][0] > 0.6 and refit2.transfer[0] > 0.6, refit2.table()


def test_natural_memorisation_probe_does_not_transfer_to_injected_secrets(toy):
    res = natural_vs_injected(toy, progress=False)
    d = len(res.depths) - 1
    assert res.recall_secrets == 1.0 and res.recall_natural > 0.95
    assert res.natural_loo[d] > 0.65, res.table()
    # the natural probe reads injected secrets no better than chance (CI includes or is below 0.5)
    assert res.natural_to_injected_ci[d][0] < 0.5 < res.natural_loo[d] - 0.1, res.table()
    assert toy.extras["sequences"]["memorised"].shape[0] == 200     # the toy itself was not modified
