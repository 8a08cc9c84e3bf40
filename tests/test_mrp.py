"""MRP (first task): the learned projection removes the forget answers more than the retain answers,
and training touches nothing but the directions."""

import torch

from repedit.edits.mrp import MRP, MRPConfig
from repedit.suites import load_suite
from repedit.verify.recall import answer_logprobs

FORMS = ("blank", "qa", "paraphrase", "adversarial")


def test_mrp_task_forgets_more_than_it_retains(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    forget = [caps[s] for s in ("France", "Japan", "Egypt")]
    retain = [caps[s] for s in ("Germany", "Italy", "Spain", "China", "India", "Mexico")]
    w0 = {k: v.clone() for k, v in smol.model.state_dict().items()}
    grads = [p.requires_grad for p in smol.model.parameters()]
    before_f, before_r = (answer_logprobs(smol, x, FORMS).exp().mean() for x in (forget, retain))
    mrp = MRP(smol, MRPConfig(layer=10, steps=15))
    proj = mrp.task(forget, retain)
    assert proj.k == 2 and torch.allclose(proj.U.T @ proj.U, torch.eye(2), atol=1e-4)
    with proj.active(smol):
        after_f, after_r = (answer_logprobs(smol, x, FORMS).exp().mean() for x in (forget, retain))
    assert after_f < 0.1 * before_f
    assert after_r / before_r > after_f / before_f
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())
    assert [p.requires_grad for p in smol.model.parameters()] == grads
