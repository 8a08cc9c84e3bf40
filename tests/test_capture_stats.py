import pytest
import torch

from repedit import Site
from repedit.errors import InputError
from repedit.fit.stats import MomentFitter
from repedit.forward.capture import capture
from repedit.suites import load_text


def test_last_token_is_padding_aware(smol):
    texts = ["Short.", "A considerably longer sentence about the history of Rome and its emperors."]
    sites = [Site(10, "resid_post"), Site(10, "mlp_hidden", position=0)]
    batched = capture(smol, texts, sites, batch_size=2)
    for i, t in enumerate(texts):
        single = capture(smol, [t], sites, batch_size=1)
        for s in sites:
            torch.testing.assert_close(batched[s][i], single[s][0], atol=1e-4, rtol=1e-4)


def test_all_positions_drop_padding(smol):
    texts = ["one two", "one two three four five"]
    site = Site(3, "resid_post", position=None)
    got = capture(smol, texts, [site])[site]
    lengths = [len(smol.encode([t])["input_ids"][0]) for t in texts]
    assert [g.shape[0] for g in got] == lengths


def test_capture_rejects_bad_input(smol):
    with pytest.raises(InputError):
        capture(smol, "not a list", [Site(1, "resid_post")])
    with pytest.raises(InputError):
        capture(smol, ["x"], [])


def test_streaming_moments_equal_batch_computation_on_real_activations(smol, tmp_path):
    docs = load_text("news", "train")[:6]
    site = Site(12, "mlp_hidden", position=None)
    rows = torch.cat(capture(smol, docs, [site], max_length=64)[site])  # [tokens, d_mlp]
    fitter = MomentFitter(smol.d_mlp)
    halves = rows.split(rows.shape[0] // 3)
    for part in halves[:2]:
        fitter.update(part)
    fitter.save(tmp_path / "fit.safetensors")
    resumed = MomentFitter.load(tmp_path / "fit.safetensors")
    for part in halves[2:]:
        resumed.update(part)
    m = resumed.fit()
    x = rows.double()
    assert m.n == rows.shape[0]
    torch.testing.assert_close(m.mean.double(), x.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.second_moment.double(), x.T @ x / len(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m.covariance.double(), torch.cov(x.T), atol=1e-4, rtol=1e-4)
    # merging two shards gives the same as one pass
    a, b = MomentFitter(smol.d_mlp).update(rows[:50]), MomentFitter(smol.d_mlp).update(rows[50:])
    torch.testing.assert_close(a.merge(b).fit().second_moment, m.second_moment, atol=1e-6, rtol=1e-6)


@pytest.mark.fast
def test_null_space_projector_is_a_projector_onto_low_variance_directions():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    x = torch.randn(500, 6, generator=g) * torch.tensor([10, 10, 10, 0.01, 0.01, 0.01])
    m = MomentFitter(6).update(x @ basis.T).fit()
    p = m.null_space_projector(rel_threshold=1e-3)
    torch.testing.assert_close(p @ p, p, atol=1e-5, rtol=0)
    assert round(float(torch.trace(p))) == 3
    torch.testing.assert_close(p @ basis[:, 3], basis[:, 3], atol=1e-3, rtol=0)


@pytest.mark.fast
def test_fitter_rejects_bad_input():
    with pytest.raises(InputError):
        MomentFitter(0)
    with pytest.raises(InputError):
        MomentFitter(3).update(torch.ones(2, 4))
    with pytest.raises(InputError):
        MomentFitter(3).fit()
    with pytest.raises(InputError):
        MomentFitter(2).update(torch.tensor([[float("nan"), 1.0]]))
