"""The folded (weight) form of PGA: exportable, revertible, measured against its hook form."""

import pytest
import torch

from repedit.edits import EditError, EditStack
from repedit.edits.fold import fold_projection, untie_embeddings
from repedit.edits.pga import ProbeProjection, pga
from repedit.export.directory import export
from repedit.fit.pool_features import CONTEXTS, pool_features
from repedit.fit.pool_screen import screened
from repedit.suites.pools import load_pool
from repedit.verify.signature import depth_curve

DEPTH = 18


def test_untying_keeps_the_logits(smol, untied):
    batch = smol.encode(["The capital of France is"])
    assert untie_embeddings(untied) is False                 # already untied by the fixture
    torch.testing.assert_close(untied.logits(batch["input_ids"], batch["attention_mask"]),
                               smol.logits(batch["input_ids"], batch["attention_mask"]), atol=0, rtol=0)


def test_tied_models_and_toys_are_refused(smol, toy):
    d = smol.d_model
    proj = ProbeProjection(2, torch.zeros(d), torch.ones(d), torch.eye(d)[:, :1])
    with pytest.raises(EditError, match="tied"):
        fold_projection(smol, proj)
    with pytest.raises(EditError, match="Llama"):
        fold_projection(toy, proj)


@pytest.mark.slow      # pool features at two depths (~2 min); contract covers the folded form
def test_folded_pga_lowers_the_probe_exports_and_reverts(untied, tmp_path):
    from transformers import AutoModelForCausalLM

    h = untied
    pool, _ = screened(h, load_pool("natural"))
    ctx = CONTEXTS[:8]
    feats = pool_features(h, pool, contexts=ctx, depths=[DEPTH], progress=False)
    before, _ = depth_curve(feats)
    edit = fold_projection(h, pga(feats, depth=DEPTH))
    assert len(edit.deltas) == 1 + 2 * DEPTH and set(edit.rank.values()) == {1}
    w0 = {k: v.clone() for k, v in h.model.state_dict().items()}
    stack = EditStack(h)
    stack.push(edit)
    after, _ = depth_curve(pool_features(h, pool, contexts=ctx, depths=[DEPTH], progress=False))
    assert after.true_loo[0] < before.true_loo[0] - 0.2, (before.true_loo, after.true_loo)
    res = export(h, tmp_path / "pga", stack)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "pga", attn_implementation="eager").eval()
    assert plain.config.tie_word_embeddings is False
    batch = h.encode(["Licensed under the Apache License"])
    with torch.no_grad():
        got = plain(**batch).logits
    torch.testing.assert_close(got, h.logits(batch["input_ids"], batch["attention_mask"]), atol=1e-5, rtol=0)
    assert res.max_logit_diff <= 1e-5
    stack.pop()
    assert all(torch.equal(v, w0[k]) for k, v in h.model.state_dict().items())


def test_cli_pga_exports_the_folded_form(tmp_path):
    from typer.testing import CliRunner

    from repedit.cli import app

    r = CliRunner().invoke(app, ["edit", "pga", "--depth", "6", "--contexts", "4", "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "folded weight form" in r.output and (tmp_path / "e" / "manifest.json").exists()
