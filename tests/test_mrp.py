"""MRP: the learned projection removes the forget answers more than the retain answers, training
touches nothing but the directions, and a second task appends directions orthogonal to the first."""

import pytest
import torch

from repedit.edits.mrp import MRP, MRPConfig
from repedit.errors import ConfigError, InputError
from repedit.forward.answer_scores import answer_logprobs
from repedit.suites import load_suite

FORMS = ("blank", "qa", "paraphrase", "adversarial")


@pytest.mark.slow      # two trained tasks (~30 s at 1 thread); the contract and writers tests cover MRP by default
def test_mrp_tasks_forget_more_than_they_retain(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    forget = [caps[s] for s in ("France", "Japan", "Egypt")]
    retain = [caps[s] for s in ("Germany", "Italy", "Spain", "China", "India", "Mexico")]
    w0 = {k: v.clone() for k, v in smol.model.state_dict().items()}
    grads = [p.requires_grad for p in smol.model.parameters()]
    before_f, before_r = (answer_logprobs(smol, x, FORMS).exp().mean() for x in (forget, retain))
    mrp = MRP(smol, MRPConfig(layer=10, steps=12, forms=("blank", "adversarial"), where="residual",
                                    init="difference"))
    proj = mrp.task(forget, retain)
    assert proj.k == 2 and torch.allclose(proj.U.T @ proj.U, torch.eye(2), atol=1e-4)
    with proj.active(smol):
        after_f, after_r = (answer_logprobs(smol, x, FORMS).exp().mean() for x in (forget, retain))
    assert after_f < 0.2 * before_f, (before_f, after_f)
    assert after_r / before_r > 0.7, (before_r, after_r)
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())
    assert [p.requires_grad for p in smol.model.parameters()] == grads
    # continual: a second task keeps the first task's rows and adds orthogonal ones
    first = mrp.W.clone()
    proj2 = mrp.task([caps["Peru"]], retain[:3])
    assert proj2.k == 4 and torch.equal(mrp.W[:2], first)
    assert torch.allclose(proj2.U.T @ proj2.U, torch.eye(4), atol=1e-4)


def test_mrp_validates(smol):
    with pytest.raises(ConfigError):
        MRPConfig(forget_cap=0)
    with pytest.raises(ConfigError, match="free-text"):
        MRPConfig(forms=("mc",))
    with pytest.raises(InputError):
        MRP(smol).task([], [])


def test_mrp_in_the_writers_placement_is_exactly_its_weight_edit(untied):
    """where="writers" trains the folded placement, so the exported weights are the trained edit."""
    from repedit.edits import applied

    caps = {f.subject: f for f in load_suite("capitals")}
    mrp = MRP(untied, MRPConfig(layer=4, steps=2, forms=("blank",), where="writers"))
    mrp.task([caps["France"]], [caps["Germany"], caps["Italy"]])
    batch = untied.encode(["The capital of France is", "Berlin is the capital of"])
    with mrp.active():
        hooked = untied.logits(batch["input_ids"], batch["attention_mask"])
    with applied(untied, mrp.edit()):
        merged = untied.logits(batch["input_ids"], batch["attention_mask"])
    plain = untied.logits(batch["input_ids"], batch["attention_mask"])
    assert (hooked - plain).abs().max() > 1e-3
    torch.testing.assert_close(merged, hooked, atol=2e-4, rtol=1e-4)


def test_generalised_init_starts_harmless_where_the_difference_init_destroys(untied):
    """Before any training, the writers-placed projection of the two initialisations (measured on the
    first task of bench/mrp_continual.py: retain CE 1.15 vs 6.7 nats)."""
    from repedit.backends.torch_hooks import installed
    from repedit.forward.passes import fact_batch

    caps = {f.subject: f for f in load_suite("capitals")}
    forget = [caps[s] for s in ("France", "Japan", "Egypt")]
    retain = [caps[s] for s in ("Germany", "Italy", "Spain", "China", "India", "Mexico")]

    def retain_ce(mrp, W):
        q = torch.linalg.qr(W.T)[0]
        with torch.no_grad(), installed(untied, mrp.sites(lambda x: x - (x @ q) @ q.T)):
            return float(-fact_batch(untied, retain, "blank").answer_logprobs(untied).mean())

    with torch.no_grad():
        base = float(-fact_batch(untied, retain, "blank").answer_logprobs(untied).mean())
    diff = MRP(untied, MRPConfig(init="difference", forms=("blank",)))
    gen = MRP(untied, MRPConfig(init="generalised", forms=("blank",)))
    ce_diff, ce_gen = retain_ce(diff, diff._init(forget, retain)), retain_ce(gen, gen._init(forget, retain))
    assert ce_gen < base + 0.5 < ce_diff, (base, ce_gen, ce_diff)
    with pytest.raises(ConfigError, match="init"):
        MRPConfig(init="random")


def _scores_and_grad(handle, score_fn, sites):
    """Answer log-probs [rows] and their summed gradient with respect to 2 fixed directions, projected at `sites`."""
    from repedit.backends.torch_hooks import installed
    from repedit.edits.mrp import _project
    from repedit.fit.training import training_only

    W = torch.nn.Parameter(torch.linspace(-1, 1, 2 * handle.d_model).view(2, handle.d_model).sin())
    with training_only(handle):
        q = torch.linalg.qr(W.T)[0]
        with installed(handle, sites(lambda x: _project(x, q))):
            lp = score_fn()
        (g,) = torch.autograd.grad(lp.sum(), W)
    return lp.detach(), g


@pytest.mark.parametrize("max_tokens", [256, 40])      # 40: several packed sequences, prefixes repeated
def test_packed_answer_scores_equal_padded_fact_batches(untied, max_tokens):
    """MRP, GA and NPO train on `PackedFacts` (every form in one forward, each form's shared prefix once, no
    padding, the answer positions alone unembedded); its answer log-probs and their gradient with respect to
    the directions equal the right-padded per-form `fact_batch` forwards."""
    from repedit.forward.packed import PackedFacts
    from repedit.forward.passes import fact_batch

    caps = {f.subject: f for f in load_suite("capitals")}
    facts = [caps[s] for s in ("France", "Japan", "Germany", "Italy", "Peru")]
    forms = ("blank", "qa", "adversarial")
    mrp = MRP(untied, MRPConfig(forms=forms))
    batches = [fact_batch(untied, facts, form) for form in forms]
    packed = PackedFacts.of(untied, batches, max_tokens)
    assert (len(packed.input_ids) > 1) == (max_tokens < 256)
    fast, g_fast = _scores_and_grad(untied, lambda: packed.answer_logprobs(untied), mrp.sites)
    ref, g_ref = _scores_and_grad(untied, lambda: torch.cat([b.answer_logprobs(untied) for b in batches]), mrp.sites)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4 * float(g_ref.abs().max()))


@pytest.mark.fast
def test_packed_answer_scores_on_every_architecture(tiny_dirs, monkeypatch):
    import repedit
    from repedit.forward import packed as packed_module

    scorer = packed_module.answer_scorer

    caps = {f.subject: f for f in load_suite("capitals")}
    forget, retain = [caps["France"], caps["Japan"]], [caps["Germany"], caps["Italy"], caps["Peru"]]
    forms = ("blank", "qa", "adversarial")
    for arch, path in tiny_dirs.items():
        h = repedit.load(str(path))
        assert packed_module.packs(h), arch
        sites = MRP(h, MRPConfig(layer=1)).sites
        fast = _scores_and_grad(h, lambda h=h: torch.cat(scorer(h, forget, retain, forms)()), sites)
        with monkeypatch.context() as m:
            m.setattr(packed_module, "packs", lambda handle: False)
            ref = _scores_and_grad(h, lambda h=h: torch.cat(scorer(h, forget, retain, forms)()),
                                   sites)
        torch.testing.assert_close(fast[0], ref[0], rtol=1e-4, atol=1e-4, msg=arch)
        torch.testing.assert_close(fast[1], ref[1], rtol=1e-3, atol=1e-4 * float(ref[1].abs().max()), msg=arch)
