"""TOFU's metrics as the source defines them (Maini et al. 2024; locuslab/tofu `aggregate_eval_stat.py`,
open-unlearning's `tofu_metrics`):

- Probability: forget / retain sets, exp(−mean answer NLL) per question (`normalised_probs`); real
  authors / world facts, that of the answer over the answer plus the perturbed (wrong) answers.
- ROUGE: ROUGE-L recall of the greedy answer against the answer.
- Truth ratio per question: R = (geometric mean over perturbed answers of their normalised probability)
  / normalised probability of the paraphrased answer (the answer where there is none). Reported as
  mean(min(R, 1/R)) on the forget set, mean(max(0, 1 − R)) elsewhere.
- Forget quality: the p-value of the two-sample KS test between the forget set's truth ratios under
  this model and under the retain model (a model never trained on the forget set); needs `reference`.
  Without one repedit reports `ks_vs_original_pvalue` (the original model in place of the retain model:
  1 = the distribution did not move), never a forget quality.
- Model utility: the harmonic mean of the nine retain / real-authors / world-facts numbers above.
"""

from __future__ import annotations

import numpy as np

from repedit.verify.benchmarks.text import generate, normalised_probs, rouge_l


def _split(handle, items: list[dict], max_new_tokens: int, options_prob: bool) -> dict:
    qs = [it["question"] for it in items]
    p_answer = normalised_probs(handle, qs, [it["answer"] for it in items])
    p_para = normalised_probs(handle, qs, [it["paraphrased_answer"] for it in items])
    pert = [(k, w) for k, it in enumerate(items) for w in it["perturbed_answer"]]
    p_pert = normalised_probs(handle, [qs[k] for k, _ in pert], [w for _, w in pert]) if pert else np.array([])
    by = [np.array([p for (k, _), p in zip(pert, p_pert) if k == i]) for i in range(len(items))]
    # geometric mean over perturbed answers = exp(mean of their mean log-probs), as TOFU averages losses
    p_false = np.array([np.exp(np.log(b).mean()) if len(b) else np.nan for b in by])
    ratio = p_false / np.maximum(p_para, 1e-300)
    prob = p_answer / (p_answer + np.array([b.sum() for b in by])) if options_prob else p_answer
    outs = generate(handle, qs, True, max_new_tokens)
    rouge = rouge_l(outs, [it["answer"] for it in items])["recall"]
    return {"probability": float(prob.mean()), "rouge_l_recall": float(rouge.mean()), "n": len(items),
            "truth_ratios": [float(r) for r in ratio], "outputs": outs[:5]}


def score(handle, bench, forget_ids: set[str], state: dict, reference: dict | None, max_new_tokens: int) -> dict:
    from scipy.stats import hmean, ks_2samp

    items = bench.items
    forget = [it for it in items["forget"] if it["id"] in forget_ids]
    out = {"forget": _split(handle, forget, max_new_tokens, False)}
    r = np.array(out["forget"]["truth_ratios"])
    out["forget"]["truth_ratio"] = float(np.mean(np.minimum(r, 1 / r)))
    if "forget_truth_ratios" not in state:
        state["forget_truth_ratios"] = list(r)                   # the original model's (first measurement)
    out["ks_vs_original_pvalue"] = float(ks_2samp(r, state["forget_truth_ratios"]).pvalue)
    ref = (reference or {}).get("forget", {}).get("truth_ratios")
    out["forget_quality"] = float(ks_2samp(r, ref).pvalue) if ref else None
    out["forget_quality_reference"] = (reference or {}).get("model") if ref else "none given (needs the retain model)"
    utility = []
    for key in ("retain", "real_authors", "world_facts"):
        if items.get(key):
            s = _split(handle, items[key], max_new_tokens, key != "retain")
            rr = np.array(s["truth_ratios"])
            s["truth_ratio"] = float(np.mean(np.maximum(0.0, 1 - rr)))
            out[key] = s
            utility += [s["probability"], s["rouge_l_recall"], s["truth_ratio"]]
    if utility:
        out["model_utility"] = float(hmean(np.maximum(utility, 0.0))) if min(utility) > 0 else 0.0
        out["model_utility_over"] = [k for k in ("retain", "real_authors", "world_facts") if k in out]
    return out
