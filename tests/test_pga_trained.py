"""Trained PGA on the real default model: the live probe loses the memorisation signature, the
language model is kept, and the edit is an ordinary low-rank weight edit."""

import pytest
import torch

from repedit.edits import EditStack
from repedit.edits.pga_trained import TrainedPGAConfig, trained_pga
from repedit.errors import ConfigError, InputError
from repedit.fit.pool_features import CONTEXTS, pool_features
from repedit.fit.pool_screen import screened
from repedit.suites import load_text
from repedit.suites.pools import load_pool, toy_pool
from repedit.verify.perplexity import perplexity
from repedit.verify.signature import depth_curve

DEPTH = 7           # an early depth with a clear signature on SmolLM2 (True-LOO 0.71, gap +0.21): cheap to train


@pytest.mark.slow      # trains 4 layers (~2 min); the contract test pushes/reverts/exports trained PGA by default
def test_trained_pga_lowers_the_probe_and_keeps_the_language_model(smol):
    pool, _ = screened(smol, load_pool("natural"))
    ctx = CONTEXTS[:4]
    news = load_text("news", "heldout")[:8]

    def loo() -> float:
        return depth_curve(pool_features(smol, pool, contexts=ctx, depths=[DEPTH], progress=False))[0].true_loo[0]

    w0 = {k: v.clone() for k, v in smol.model.state_dict().items()}
    before, ppl0 = loo(), perplexity(smol, news)
    edit = trained_pga(smol, pool, TrainedPGAConfig(depth=DEPTH, steps=16, refit_every=4, n_contexts=4, lr=1e-2,
                                                                 batch_pairs=8, clean_texts=2),
                       progress=False)
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())   # training touched nothing
    assert set(edit.rank.values()) == {1} and len(edit.deltas) == 4
    stack = EditStack(smol)
    stack.push(edit)
    after, ppl1 = loo(), perplexity(smol, news)
    stack.pop()
    assert before > 0.6 and after < before - 0.1, (before, after)
    assert ppl1 < 1.1 * ppl0, (ppl0, ppl1)
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())


def test_trained_pga_validates(smol, toy):
    with pytest.raises(ConfigError):
        TrainedPGAConfig(rank=0)
    with pytest.raises(ConfigError, match="below the depth"):
        trained_pga(smol, load_pool("natural"), TrainedPGAConfig(depth=4, layers=(5,)))
    with pytest.raises(InputError, match="text pool"):
        trained_pga(toy, toy_pool(toy))
