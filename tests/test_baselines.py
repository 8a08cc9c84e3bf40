"""Gradient baselines (GA, NPO) and the relearning attack on the real default model."""

import pytest
import torch

from repedit.baselines.gradient import GradientConfig, gradient_unlearn
from repedit.edits import EditStack
from repedit.errors import ConfigError, InputError
from repedit.forward.answer_scores import answer_logprobs
from repedit.suites import load_suite
from repedit.verify.relearn import relearn

FORMS = ("blank", "paraphrase", "adversarial")


def _caps(*subjects):
    caps = {f.subject: f for f in load_suite("capitals")}
    return [caps[s] for s in subjects]


def _weights(h):
    return {k: v.clone() for k, v in h.model.state_dict().items()}


@pytest.mark.parametrize("objective", ["ga", "npo"])
def test_gradient_baselines_forget_and_leave_the_model_untouched(smol, objective):
    forget, other = _caps("France", "Japan"), _caps("Germany", "Italy", "Spain")
    w0 = _weights(smol)
    grads = [p.requires_grad for p in smol.model.parameters()]
    p_f, p_o = (float(answer_logprobs(smol, x, FORMS).exp().mean()) for x in (forget, other))
    edit = gradient_unlearn(smol, forget, config=GradientConfig(objective=objective, layers=(18, 19, 20, 21),
                                                                steps=8, lr=1e-4, stop_at=0.0))
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())     # nothing applied yet
    assert [p.requires_grad for p in smol.model.parameters()] == grads
    stack = EditStack(smol)
    stack.push(edit)
    q_f, q_o = (float(answer_logprobs(smol, x, FORMS).exp().mean()) for x in (forget, other))
    stack.pop()
    assert q_f < 0.5 * p_f, (p_f, q_f)
    if objective == "npo":             # NPO's saturating loss is selective; plain GA is not (that is its known flaw)
        assert q_o / p_o > q_f / p_f, (p_o, q_o, p_f, q_f)
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())


def test_gradient_config_and_inputs_are_validated(smol):
    with pytest.raises(ConfigError, match="objective"):
        GradientConfig(objective="sgd")
    with pytest.raises(InputError, match="retain"):
        gradient_unlearn(smol, _caps("France"), config=GradientConfig(retain_weight=1.0))
    with pytest.raises(InputError, match="forget"):
        gradient_unlearn(smol, [])


def test_relearning_brings_back_ga_forgotten_facts_and_restores_weights(smol):
    """After GA, a short fine-tune on three facts brings them back; the weights are restored exactly."""
    train, held = _caps("France", "Japan", "Egypt"), _caps("Germany", "Italy")
    w0 = _weights(smol)

    stack = EditStack(smol)
    stack.push(gradient_unlearn(smol, train + held, config=GradientConfig(layers=(18, 19, 20, 21), steps=10,
                                                                           lr=3e-5, stop_at=0.0)))
    curve = relearn(smol, train, held, steps=6, every=3, lr=1e-5)
    stack.pop()
    assert curve.steps == [0, 3, 6]
    assert curve.train[-1] > 2 * curve.train[0]
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())
    with pytest.raises(InputError):
        relearn(smol, train, [], steps=2)


def test_rmu_misdirects_forget_activations_more_than_retained_ones(smol):
    from repedit.baselines.rmu import RMUConfig, rmu_unlearn
    from repedit.forward.passes import fact_batch, residual_after

    forget, retain = _caps("France", "Japan"), _caps("Germany", "Italy", "Spain")
    w0 = _weights(smol)
    cfg = RMUConfig(layer=6, steps=12, lr=1e-3, stop_at=0.0, retain_texts=4)
    edit = rmu_unlearn(smol, forget, retain, cfg)
    assert sorted(edit.params) == [f"model.layers.{i}.mlp.down_proj.weight" for i in (4, 5, 6)]
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())

    def drift():
        out = []
        for facts in (forget, retain):
            b = fact_batch(smol, facts, "blank")
            with torch.no_grad():
                out.append(residual_after(smol, b.input_ids, b.attention_mask, 6)[:, 1:])
        return out

    f0, r0 = drift()
    with EditStack(smol).temporarily(edit):
        f1, r1 = drift()
    moved = lambda a, b: float(((a - b).norm(dim=-1) / b.norm(dim=-1)).mean())     # noqa: E731
    assert moved(f1, f0) > 3 * moved(r1, r0), (moved(f1, f0), moved(r1, r0))
    log = edit.stats["trajectory"]
    assert log[0]["forget_mse"] > log[-2]["forget_mse"]
    with pytest.raises(ConfigError, match="update_layers"):
        RMUConfig(layer=4, update_layers=(5,))


def test_a_monitored_baseline_stops_at_the_level_and_its_trajectory_times_training_only(smol):
    """With a monitor, GA stops at the first check at or below stop_at; the edited model's forget is that
    last tracked value (no update after it); training seconds exclude the monitor's time."""
    import time

    from repedit.baselines.tracking import seconds_to_level
    from repedit.verify.recall import recall_probability

    forget = _caps("France", "Japan")
    p0 = recall_probability(smol, forget, FORMS)
    calls = []

    def monitor():
        time.sleep(0.2)                                   # a slow monitor must not count as training time
        calls.append(1)
        return {"forget": recall_probability(smol, forget, FORMS)}

    cfg = GradientConfig(layers=(18, 19, 20, 21), steps=30, lr=1e-4, stop_at=0.5 * p0, check_every=2)
    edit = gradient_unlearn(smol, forget, config=cfg, monitor=monitor)
    traj = edit.stats["trajectory"]
    assert [r["step"] for r in traj] == list(range(0, 2 * len(traj), 2)) and len(traj) == len(calls)
    assert traj[-1]["forget"] <= 0.5 * p0 < min(r["forget"] for r in traj[:-1])
    assert all(a["train_seconds"] < b["train_seconds"] for a, b in zip(traj, traj[1:]))
    assert edit.stats["monitor_seconds"] >= 0.2 * len(calls)
    stack = EditStack(smol)
    stack.push(edit)
    assert recall_probability(smol, forget, FORMS) == pytest.approx(traj[-1]["forget"], abs=1e-5)   # rounded to 5 d.p.
    stack.pop()
    assert seconds_to_level(traj, 0.5 * p0) == traj[-1]["train_seconds"]
    assert seconds_to_level(traj, p0) == traj[0]["train_seconds"] and seconds_to_level(traj, -1) is None
