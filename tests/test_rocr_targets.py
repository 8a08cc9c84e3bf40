"""ROCR beyond a fixed country redirect: per-fact and same-kind redirects, the optimised refusal value,
layers from causal tracing, and the recipe builder's sequential, protected path."""

import dataclasses

import pytest
import torch

from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.edits.stack import EditStack
from repedit.errors import ConfigError, InputError
from repedit.methods import Context, _rocr, rocr_redirects
from repedit.suites import load_suite
from repedit.suites.references import reference_sets

CFG = ROCRConfig(stats_tokens=6_000)
FREE = ("blank", "paraphrase", "adversarial")


@pytest.mark.fast
def test_redirects_follow_the_fact_then_the_strategy():
    caps = load_suite("capitals", limit=3)
    people = load_suite("people-occupations", limit=3)
    given = dataclasses.replace(people[0], redirect_to="a retired carpenter")
    got = rocr_redirects([given, *people[1:], *caps], "unknown")
    assert got[0] == "a retired carpenter"                      # the fact's own harmless concept wins
    train, measure = reference_sets("person").train, reference_sets("person").measure
    assert got[1:3] == list(train[:2]) and not set(got[1:3]) & set(measure)   # same kind, never a measuring one
    assert all(g.startswith("the Republic of ") for g in got[3:])             # countries read as countries
    assert rocr_redirects([given, people[1]], "refusal") == ["a retired carpenter", None]
    with pytest.raises(ConfigError, match="redirect"):
        ROCRConfig(redirect="elsewhere")
    with pytest.raises(ConfigError, match="traced"):
        ROCRConfig(layers="auto")


def test_refusal_value_is_searched_and_written(smol):
    """ORT's optimised mode: the value search raises the refusal's probability after the target, and the
    edit moves the target's residual onto that value (its effect on recall is measured in
    bench/rocr_kinds.py, not promised here)."""
    rocr = ROCR(smol, dataclasses.replace(CFG, redirect="refusal", refusal_steps=8))
    edit = rocr.edit("France", None)
    assert edit.stats["refusal_p_after"] > 1.5 * edit.stats["refusal_p_before"]
    assert edit.stats["residual_norm_after"] < 0.5 * edit.stats["residual_norm_before"]
    assert edit.target["redirect_to"].startswith("refusal")
    with pytest.raises(InputError, match="harmless concept"):
        ROCR(smol, CFG).edit("France", None)                    # the default strategy needs a concept


def test_traced_layers_come_from_the_fact(smol):
    france = next(f for f in load_suite("capitals") if f.subject == "France")
    rocr = ROCR(smol, dataclasses.replace(CFG, layers="traced", trace_width=2, trace_samples=1))
    with pytest.raises(InputError, match="traced"):
        rocr.edit("France", "the Republic of Talathia")        # nothing to trace without the fact
    edit = rocr.edit("France", "the Republic of Talathia", fact=france)
    layers = edit.stats["layers"]
    assert len(layers) == 2 and layers[1] == layers[0] + 1 and 0 <= layers[0] < smol.n_layers - 1
    assert sorted(rocr.projectors) == layers                    # statistics only for the layers used


def test_recipe_builder_is_the_sequential_protected_path(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    forget, retain = [caps["France"], caps["Germany"]], [caps["Italy"], caps["Spain"]]
    built = _rocr(Context(smol, forget=forget, retain=retain), CFG)
    assert built[0].stats["protected"] == 2 and built[1].stats["prior_keys"] == 3   # 2 retain + France
    stack = EditStack(smol)
    ref = ROCR(smol, CFG, protect=["Italy", "Spain"])
    expected = ref.edits(list(zip(["France", "Germany"], rocr_redirects(forget, "unknown"))), stack)
    try:
        for got, want in zip(built, expected):
            for a, b in zip(got.deltas, want.deltas):
                torch.testing.assert_close(a.u @ a.v.T, b.u @ b.v.T, rtol=1e-4, atol=1e-6)
    finally:
        stack.revert_all()
    unprotected = _rocr(Context(smol, forget=forget, retain=retain), dataclasses.replace(CFG, protect_retain=False))
    assert unprotected[0].stats["protected"] == 0
