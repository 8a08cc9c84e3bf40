"""Trained methods really learn on a bf16 model: what trains is a float32 master (or float32 factors), the
change an Edit carries is float32, the model is left bit-identical, and hooks compute in float32 and cast
once. The naive in-place bf16 update is measured beside it: most of Adam's small steps round away there.

Measured here (SmolLM2-135M, GA on down_proj of layers 18–21, forget France + Japan, lr 1e-5, 3 steps):
‖Δ‖ bf16 master 0.0560, fp16 master 0.0564, float32 run 0.0563; naive in-place bf16 0.0094 (17 %), naive
in-place fp16 NaN.
"""

import pytest
import torch

from repedit.baselines.gradient import GradientConfig, gradient_unlearn
from repedit.edits import EditStack
from repedit.edits.base import PrecisionError
from repedit.forward.passes import fact_batch
from repedit.suites import load_suite

BF16 = torch.bfloat16


def _caps(*subjects):
    caps = {f.subject: f for f in load_suite("capitals")}
    return [caps[s] for s in subjects]


def _state(h):
    """Values, requires_grad flags, .grad (the object) and its values, of every parameter."""
    return {n: (p.detach().clone(), p.requires_grad, p.grad, None if p.grad is None else p.grad.clone())
            for n, p in h.model.named_parameters()}


def _untouched(h, before) -> bool:
    now = _state(h)
    return all(torch.equal(now[n][0], v) and now[n][0].dtype == v.dtype and now[n][1] == flag and now[n][2] is grad
               and (grad is None or torch.equal(grad, grad_values))
               for n, (v, flag, grad, grad_values) in before.items())


def _norm(edit) -> float:
    return float(torch.sqrt(sum((d.d.double() ** 2).sum() for d in edit.deltas)))


def _naive_in_place(h, facts, names, lr: float, steps: int) -> float:
    """What training the bf16 parameters in place (the old behaviour) moves them by: ‖W_after − W_before‖."""
    params = dict(h.model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    flags = {n: p.requires_grad for n, p in params.items()}
    try:
        for n, p in params.items():
            p.requires_grad_(n in saved)
        opt = torch.optim.Adam([params[n] for n in names], lr=lr)
        batch = fact_batch(h, facts, "blank")
        for _ in range(steps):
            loss = batch.answer_logprobs(h).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(torch.sqrt(sum(((params[n].detach().double() - saved[n].double()) ** 2).sum() for n in names)))
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)
                params[n].grad = None
        for n, p in params.items():
            p.requires_grad_(flags[n])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_ga_on_half_trains_float32_masters_that_move_as_far_as_in_float32(model_in, smol, dtype):
    h16 = model_in(dtype)
    forget = _caps("France", "Japan")
    cfg = GradientConfig(layers=(18, 19, 20, 21), steps=3, lr=1e-5, stop_at=0.0)
    before = _state(h16)
    e16 = gradient_unlearn(h16, forget, config=cfg)
    assert _untouched(h16, before)                       # values bit for bit, flags, grads
    assert all(d.d.dtype == torch.float32 and d.d.device == h16.device for d in e16.deltas)
    e32 = gradient_unlearn(smol, forget, config=cfg)
    n16, n32 = _norm(e16), _norm(e32)
    numel = sum(d.d.numel() for d in e16.deltas)
    assert 0.5 < n16 / n32 < 2, (n16, n32)
    assert n16 > cfg.lr * numel ** 0.5, n16            # at least one Adam step's worth (each moves every weight ≈ lr)
    naive = _naive_in_place(h16, forget, e16.params, cfg.lr, cfg.steps)
    # in place, bf16 rounds most of each step away; fp16 Adam state underflows (ε = 1e-8 is 0) and gives NaN
    assert not naive >= 0.3 * n16, (naive, n16)
    assert _untouched(h16, before)
    # three steps at lr 1e-5 stay below the half dtype's spacing: the edit says so, and merging refuses
    # instead of silently writing (almost) nothing
    assert e16.stats["rounded_away"] > 0.5 and e32.stats["rounded_away"] == 0
    with pytest.raises(PrecisionError):
        EditStack(h16).push(e16)
    assert _untouched(h16, before)


def test_rmu_on_bf16_trains_float32_masters(model_in, smol):
    from repedit.baselines.rmu import RMUConfig, rmu_unlearn

    h16 = model_in(BF16)
    forget, retain = _caps("France", "Japan"), _caps("Germany", "Italy")
    cfg = RMUConfig(layer=6, steps=2, lr=1e-4, stop_at=0.0, retain_texts=2, check_every=2)
    before = _state(h16)
    e16 = rmu_unlearn(h16, forget, retain, cfg)
    assert _untouched(h16, before)
    assert all(d.d.dtype == torch.float32 and torch.isfinite(d.d).all() for d in e16.deltas)
    e32 = rmu_unlearn(smol, forget, retain, cfg)
    assert 0.5 < _norm(e16) / _norm(e32) < 2, (_norm(e16), _norm(e32))
    assert e16.config["coef_used"] == pytest.approx(e32.config["coef_used"], rel=0.05)   # same target scale
    assert 0 < e16.stats["rounded_away"] < 1


def test_relearn_on_bf16_moves_the_model_and_restores_it(model_in):
    from repedit.verify.relearn import relearn

    h16 = model_in(BF16)
    before = _state(h16)
    curve = relearn(h16, _caps("France"), _caps("Japan"), steps=1, every=1, lr=1e-4, forms=("blank",))
    assert _untouched(h16, before)
    assert curve.steps == [0, 1] and curve.train[1] > curve.train[0], curve     # the bf16 model did learn


def test_trainable_low_rank_hooks_a_bf16_model_in_float32(model_in):
    from repedit.edits.lowrank import TrainableLowRank
    from repedit.fit.training import training_only

    h16 = model_in(BF16)
    gen = torch.Generator(device="cpu").manual_seed(0)
    keys = {8: torch.randn(h16.d_mlp, generator=gen, device="cpu").to(BF16)}           # a bf16 key, as captured
    tr = TrainableLowRank(h16, [8], rank=2, keys=keys, protect={}, seed=0)
    assert all(t.dtype == torch.float32 and t.is_leaf and t.device == h16.device for t in tr.u + tr.v)
    seen = {}
    down = h16.model.get_submodule(h16.matrix("mlp_out", 8).name.rpartition(".")[0])
    probe = down.register_forward_hook(lambda _m, _a, out: seen.update(dtype=out.dtype))     # returns None
    batch = h16.encode(["The capital of France is"])
    try:
        with training_only(h16, ()), tr:                # weights frozen (no .grad left on the shared handle)
            h16.forward(batch["input_ids"], batch["attention_mask"]).float().logsumexp(-1).mean().backward()
    finally:
        probe.remove()
    assert seen["dtype"] == BF16                                            # the output stays in the model's dtype
    assert tr.u[0].grad is not None and tr.u[0].grad.dtype == torch.float32 and tr.u[0].grad.abs().sum() > 0
    (d,) = tr.deltas()
    assert d.u.dtype == d.v.dtype == torch.float32


def test_sae_align_trains_float32_factors_on_bf16(model_in):
    from pathlib import Path

    from repedit.edits.sae_align import FRAMES, SAEAlignConfig, sae_align
    from repedit.fit.saes import load_sae
    from repedit.suites import unknown_entities

    h16 = model_in(BF16)
    sae = load_sae(Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk")
    known = ["Japan", "Germany", "Italy", "Russia", "China", "Mexico", "Spain"]
    cfg = SAEAlignConfig(steps=2, lr=3e-2, frames=FRAMES[:2], forms=("blank",), n_reference=6, n_retain=2,
                         lm_texts=2, lm_batch=1)
    before = _state(h16)
    edit = sae_align(h16, sae, _caps("France")[0], known, unknown_entities()[:6], config=cfg)
    assert _untouched(h16, before)
    for d in edit.deltas:
        assert d.u.dtype == d.v.dtype == torch.float32 and torch.isfinite(d.u).all() and torch.isfinite(d.v).all()
    assert max(float((d.u @ d.v.T).abs().max()) for d in edit.deltas) > 0      # it learned something
    assert edit.stats["final"]["loss"] != edit.stats["initial"]["loss"]


def test_mrp_trains_float32_directions_on_bf16(model_in):
    from repedit.edits.mrp import MRP, MRPConfig

    h16 = model_in(BF16)
    before = _state(h16)
    mrp = MRP(h16, MRPConfig(layer=6, steps=2, forms=("blank",), where="residual"))
    proj = mrp.task(_caps("France"), _caps("Germany", "Italy"))
    assert _untouched(h16, before)
    assert mrp.W.dtype == proj.U.dtype == torch.float32 and mrp.W.device == h16.device
    assert torch.allclose(proj.U.T @ proj.U, torch.eye(proj.k, device=proj.U.device), atol=1e-4)
    batch = h16.encode(["The capital of France is"])
    with mrp.active():
        logits = h16.logits(batch["input_ids"], batch["attention_mask"])
    assert logits.dtype == BF16 and torch.isfinite(logits.float()).all()


def test_trained_pga_trains_float32_factors_on_bf16(model_in):
    from repedit.edits.pga_trained import TrainedPGAConfig, trained_pga
    from repedit.suites.pools import load_pool

    h16 = model_in(BF16)
    before = _state(h16)
    cfg = TrainedPGAConfig(depth=6, layers=(4, 5), steps=2, lr=2e-2, refit_every=2, n_contexts=1, batch_pairs=4,
                           clean_texts=2)
    edit = trained_pga(h16, load_pool("natural"), cfg, progress=False)
    assert _untouched(h16, before)
    assert all(d.u.dtype == d.v.dtype == torch.float32 and d.u.device == h16.device for d in edit.deltas)
    assert all(float(d.u.abs().max()) > 0 for d in edit.deltas)               # A left zero: it trained


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_adam_in_backward_equals_adam_and_holds_one_gradient_at_a_time(model_in, dtype):
    """The relearning attack fine-tunes every weight with `Trainable.adam_in_backward`: each parameter takes its
    Adam step as soon as its gradient is complete, so at most one parameter gradient exists at any time (the
    P-sized gradient never does), and the weights after 2 steps are bit-identical to Adam's usual
    zero_grad / backward / step (float32 and bf16 masters); the model is restored afterwards. A gradient
    left on the model by earlier work neither enters the first step nor is changed (it was accumulated into
    in place once, and the two trainings then differed)."""
    from repedit.fit.training import training_only

    h = model_in(dtype)
    batch = fact_batch(h, _caps("France", "Japan"), "blank")
    names = [n for n, _ in h.model.named_parameters()]
    stale = {n: torch.full_like(p, 0.5) for n, p in list(h.model.named_parameters())[:3]}
    for n, p in h.model.named_parameters():
        p.grad = stale.get(n)
    before = _state(h)
    try:
        results, most = [], [0]
        for fused in (False, True):
            with training_only(h, names) as trainable:
                if fused:
                    def count(_p):
                        most[0] = max(most[0], sum(m.grad is not None for m in trainable.masters.values()))
                    hooks = [p.register_post_accumulate_grad_hook(count) for p in trainable.params.values()]
                    with trainable.adam_in_backward(1e-4):
                        for _ in range(2):
                            (-batch.answer_logprobs(h).mean()).backward()
                    for hk in hooks:
                        hk.remove()
                else:
                    opt = trainable.optimizer(1e-4)
                    for _ in range(2):
                        opt.zero_grad()
                        (-batch.answer_logprobs(h).mean()).backward()
                        opt.step()
                results.append({n: p.detach().clone() for n, p in trainable.params.items()})
                assert all(m.grad is None for m in trainable.masters.values()) or not fused
        assert most[0] <= 1
        changed = [n for n in names if not torch.equal(results[0][n], before[n][0])]
        assert len(changed) > len(names) // 2                            # it really trained
        assert all(torch.equal(results[0][n], results[1][n]) for n in names)
        assert _untouched(h, before)
    finally:
        for p in h.model.parameters():
            p.grad = None


def test_fused_adam_takes_adams_steps():
    """`training.adam` (fused on the CPU) updates as torch's reference Adam does, up to the last bit."""
    from repedit.fit.training import adam

    gen = torch.Generator(device="cpu").manual_seed(0)
    start = torch.randn(4096, generator=gen, device="cpu")
    grads = [torch.randn(4096, generator=gen, device="cpu") * (k + 1) for k in range(6)]
    fast, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt, ref_opt = adam([fast], 1e-3), torch.optim.Adam([ref], lr=1e-3, foreach=False)
    assert opt.defaults["fused"]
    for g in grads:
        for p, o in ((fast, opt), (ref, ref_opt)):
            p.grad = g.clone()
            o.step()
    assert not torch.equal(fast, start)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-7)
