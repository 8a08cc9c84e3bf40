"""Quantisation attack: does quantising the edited model the way deployments do bring the erased
answers back? (After 4-bit quantisation unlearned models recovered up to 83 % of forgotten knowledge —
"Catastrophic Failure of LLM Unlearning via Quantization", ICLR 2025; int8 is usually harmless.)

`quantisation_probabilities` measures one model state unquantised and under each scheme: answer
probability of the forget facts per form and of the neighbours. Run it on the original model once and
on each edited model; `recovered_fractions` turns the two into the share of the erased probability that
quantisation brings back:

    recovered            = (P_q(edited) − P(edited)) / (P(original) − P(edited))
    recovered_vs_quant   = (P_q(edited) − P(edited)) / (P_q(original) − P(edited))

the second against what the quantised original still knows (a 4-bit grid other than the one the weights
were shipped on lowers the original too). Both are reported per scheme, on the mean over forms.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from repedit.errors import InputError
from repedit.suites import Fact
from repedit.verify.quantised_weights import parse_scheme, quantised
from repedit.verify.recall import recall_probability

UNQUANTISED = "none"


def _probabilities(handle, facts: Sequence[Fact], forms: Sequence[str], neighbours: Sequence[Fact],
                   side_forms: Sequence[str]) -> dict:
    per_form = {form: recall_probability(handle, facts, [form]) for form in forms}
    out = {"forget": per_form, "forget_mean": sum(per_form.values()) / len(per_form)}
    if neighbours:
        out["neighbours"] = recall_probability(handle, neighbours, side_forms)
    return out


def quantisation_probabilities(handle, facts: Sequence[Fact], schemes: Sequence[str], *,
                               forms: Sequence[str] = ("blank", "qa"), neighbours: Sequence[Fact] = (),
                               side_forms: Sequence[str] = ("blank", "qa"), names: Sequence[str] | None = None,
                               progress: bool = False) -> dict:
    """{"none" | scheme: {"forget": {form: p}, "forget_mean", "neighbours"}} of the live model, unquantised
    and under each scheme (the weights are restored exactly after each). `names`: quantise only these
    weights (default: every 2-D weight, as deployments do)."""
    if not facts:
        raise InputError("the quantisation attack needs forget facts")
    parsed = [parse_scheme(s) for s in schemes]                 # fail on a bad name before any work
    out = {UNQUANTISED: _probabilities(handle, facts, forms, neighbours, side_forms)}
    for scheme in tqdm(parsed, disable=not progress, desc="quantisation attack"):
        with quantised(handle, scheme, names):
            out[scheme.name] = _probabilities(handle, facts, forms, neighbours, side_forms)
    return out


def _share(gain: float, erased: float) -> float | None:
    return gain / erased if erased > 1e-9 else None


def recovered_fractions(original: dict, edited: dict) -> dict[str, dict]:
    """Per scheme: forget probability quantised, the recovered shares (module doc) and the neighbours."""
    p_orig, p_edit = original[UNQUANTISED]["forget_mean"], edited[UNQUANTISED]["forget_mean"]
    out = {}
    for name, row in edited.items():
        if name == UNQUANTISED:
            continue
        pq_orig = original.get(name, {}).get("forget_mean")
        gain = row["forget_mean"] - p_edit
        out[name] = {"forget": row["forget_mean"], "forget_original": pq_orig,
                     "recovered": _share(gain, p_orig - p_edit),
                     "recovered_vs_quant": _share(gain, pq_orig - p_edit) if pq_orig is not None else None,
                     "neighbours": row.get("neighbours"),
                     "neighbours_original": original.get(name, {}).get("neighbours")}
    return out
