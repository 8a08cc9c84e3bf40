"""Causal tracing (ROME) on the real default model: what restoring a clean state must and must not do."""

import json

import pytest
import torch

from repedit.errors import InputError
from repedit.locate.tracing import (
    ROLES,
    TraceAggregate,
    causal_trace,
    default_window,
    peak,
    subject_span,
    trace_facts,
    traced_layers,
    window_layers,
)
from repedit.suites import load_suite

PROMPT, ANSWER, SUBJECT = "The capital of France is", "Paris", "France"
LAYERS = (0, 1, 2, 27, 28, 29)


@pytest.fixture(scope="module")
def traced(smol):
    """One trace of a short fact (2 noise draws, 8 layers), and whether the weights stayed bit-identical."""
    before = {n: p.detach().clone() for n, p in smol.model.named_parameters()}
    result = causal_trace(smol, PROMPT, ANSWER, SUBJECT, samples=2, layers=LAYERS)
    same = all(torch.equal(before[n], p) for n, p in smol.model.named_parameters())
    return result, same


def test_trace_shapes_and_corruption(traced):
    r, _ = traced
    assert r.tokens == ("The", " capital", " of", " France", " is") and r.subject_span == (3, 4)
    assert r.layers == LAYERS and r.kinds == ("resid", "mlp", "attn") and r.window == 6
    for grid in r.restored.values():
        assert grid.shape == (5, len(LAYERS)) and grid.dtype == torch.float32 and grid.device.type == "cpu"
    assert r.answer_token == " Paris" and r.clean > 0.3 and r.corrupted < 0.5 * r.clean
    json.dumps(r.to_dict(), allow_nan=False)


def test_restoring_the_last_state_gives_back_the_clean_answer(traced):
    r, _ = traced
    assert r.restored["resid"][-1, -1].item() == pytest.approx(r.clean, abs=1e-4)
    assert r.recovery("resid")[-1, -1].item() == pytest.approx(1.0, abs=1e-3)


def test_restoring_before_the_subject_does_nothing(traced):
    r, _ = traced
    start, _ = r.subject_span
    for kind, grid in r.restored.items():
        assert torch.allclose(grid[:start], torch.full_like(grid[:start], r.corrupted), atol=1e-5), kind


def test_tracing_leaves_the_weights_bit_identical(traced):
    assert traced[1]


def test_traced_layers_and_peak(traced):
    r, _ = traced
    for kind in r.kinds:
        chosen = traced_layers(r, kind, n=3)
        assert len(chosen) == 3 and list(chosen) == list(range(chosen[0], chosen[0] + 3)) and set(chosen) <= set(LAYERS)
    assert traced_layers(r, "resid", n=2, role="last token") == (28, 29)   # the last states carry the answer
    where, layer, rec = peak(r, "resid")
    assert where in range(5) and layer in LAYERS and rec == pytest.approx(r.recovery("resid").max().item())
    assert peak(r, "mlp", "last subject token").where == "last subject token"
    with pytest.raises(InputError):
        traced_layers(r, "mlp", n=5)          # no 5 consecutive traced layers
    with pytest.raises(InputError):
        peak(r, "mlp", "first subsequent token")   # the subject is followed only by the last token


def test_subject_span_is_robust_and_a_missing_subject_is_an_input_error(smol):
    ids = smol.encode(["The capital of the United States is"])["input_ids"][0].tolist()
    s, e = subject_span(smol.tokenizer, ids, " United States")
    assert smol.tokenizer.decode(ids[s:e]).strip() == "United States"
    with pytest.raises(InputError, match="Germany.*The capital of France is|The capital of France is.*Germany"):
        causal_trace(smol, PROMPT, ANSWER, "Germany", samples=1, layers=(29,))
    with pytest.raises(InputError):
        causal_trace(smol, PROMPT, ANSWER, SUBJECT, kinds=("mlp_hidden",), layers=(29,))


@pytest.mark.fast
def test_window_rule():
    assert default_window(48) == 10 and default_window(30) == 6 and default_window(2) == 1
    assert window_layers(0, 6, 30) == range(0, 3) and window_layers(29, 6, 30) == range(26, 30)
    assert len(window_layers(20, 10, 48)) == 10 and len(window_layers(20, 5, 48)) == 5


def test_same_seed_same_trace(smol):
    a, b = (causal_trace(smol, PROMPT, ANSWER, SUBJECT, kinds=("resid",), samples=1, layers=(29,), seed=3)
            for _ in range(2))
    assert torch.equal(a.restored["resid"], b.restored["resid"]) and a.corrupted == b.corrupted


def test_trace_facts_aggregates_roles(smol, tmp_path):
    from repedit.plots import trace_aggregate_heatmap, trace_heatmap

    facts = [f for f in load_suite("capitals") if f.subject in ("France", "Japan")]
    agg = trace_facts(smol, facts, "blank", kinds=("resid", "mlp"), samples=1, layers=(0, 1, 2, 29))
    assert isinstance(agg, TraceAggregate) and len(agg.results) == 2 and agg.layers == (0, 1, 2, 29)
    assert agg.recovery["mlp"].shape == (len(ROLES), 4) and agg.counts[ROLES.index("last token")] == 2
    assert agg.recovery["resid"][ROLES.index("last token"), -1].item() == pytest.approx(1.0, abs=1e-3)
    assert len(traced_layers(agg, "mlp", n=3)) == 3
    json.dumps(agg.to_dict(), allow_nan=False)
    assert trace_aggregate_heatmap(agg, tmp_path / "agg.png").stat().st_size > 0
    assert trace_heatmap(agg.results[0], tmp_path / "one.png").stat().st_size > 0


def test_bfloat16_trace(model_in):
    h = model_in(torch.bfloat16)
    r = causal_trace(h, PROMPT, ANSWER, SUBJECT, kinds=("resid",), samples=1, layers=(28, 29))
    assert r.restored["resid"].dtype == torch.float32 and r.corrupted < r.clean
    assert r.recovery("resid")[-1, -1].item() == pytest.approx(1.0, abs=0.02)


def test_cli_trace_writes_json_and_png(tmp_path):
    from typer.testing import CliRunner

    from repedit.cli import app

    res = CliRunner().invoke(app, ["locate", "trace", "--prompt", PROMPT, "--answer", ANSWER, "--subject", SUBJECT,
                                   "--layers", "27-29", "--kinds", "resid,mlp", "--samples", "1",
                                   "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "traced_layers(mlp" in res.output and (tmp_path / "trace.png").exists()
    data = json.loads((tmp_path / "trace.json").read_text())
    assert data["subject_span"] == [3, 4] and len(data["restored"]["mlp"]) == 5 and data["traced_layers"]["mlp"]
