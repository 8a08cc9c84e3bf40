"""The issue's miss, reproduced and explained: ROCR on famous works → author (the inline facts of
recipes/inline-facts.toml, the model's known ones). Answers here are several tokens ("William Shakespeare"),
and the five-form answer probability is the per-token mean — once the first token is given, the rest
("…Shakespeare") is predicted from the answer itself. So this script reports, per form, the usual
length-normalised probability *and* the probability of the answer's first token, before and after ROCR
(preset layers vs traced layers; invented works as redirects), plus the aggregated causal trace of the
facts (where restoring a clean state brings the answer back). Writes bench/rocr_works.json.

    .venv/bin/python bench/rocr_works.py
"""

import json
import os
import tomllib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.edits.rocr import ROCR, ROCRConfig  # noqa: E402
from repedit.edits.stack import applied  # noqa: E402
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids  # noqa: E402
from repedit.locate.tracing import ROLES, trace_facts  # noqa: E402
from repedit.methods import rocr_redirects  # noqa: E402
from repedit.plots import trace_aggregate_heatmap  # noqa: E402
from repedit.suites import FORMS, facts_from_records  # noqa: E402
from repedit.verify.recall import known_facts, recall  # noqa: E402

FREE = ("qa", "blank", "adversarial", "paraphrase")


def first_token_probability(h, facts, form):
    prompts = [prompt_ids(h, f.forms[form]["prompt"], f.forms[form]["chat"]) for f in facts]
    firsts = [answer_ids(h, f.answer, f.forms[form]["chat"])[:1] for f in facts]
    return float(np.mean(np.exp(continuation_logprobs(h, prompts, firsts))))


def measure(h, facts):
    r = recall(h, facts, FORMS, progress=False)
    return {"mean": r.mean_probability, "forms": {k: v.probability for k, v in r.forms.items()},
            "first_token": {f: first_token_probability(h, facts, f) for f in FREE}}


def main():
    h = repedit.load("smollm2-135m")
    raw = tomllib.loads(Path("recipes/inline-facts.toml").read_text())["targets"]["facts"]
    facts = known_facts(h, facts_from_records(raw))
    out = {"facts": [f.subject for f in facts], "before": measure(h, facts)}
    agg = trace_facts(h, facts, kinds=("resid", "mlp"), samples=2)
    trace_aggregate_heatmap(agg, "docs/runs/traces/works-author.png")
    out["trace"] = {k: {role: [None if np.isnan(x) else round(float(x), 3) for x in agg.recovery[k][i]]
                        for i, role in enumerate(ROLES)} for k in ("resid", "mlp")}
    for name, kw in {"preset": {}, "traced": {"layers": "traced"}}.items():
        rocr = ROCR(h, ROCRConfig(**kw))
        per = []
        for fact, redirect in zip(facts, rocr_redirects(facts, "unknown")):
            edit = rocr.edit(fact.subject, redirect, fact=fact, remember=False)
            with applied(h, edit):
                per.append(measure(h, [fact]) | {"layers": edit.stats["layers"]})
        out[name] = {"mean": float(np.mean([p["mean"] for p in per])),
                     "forms": {f: float(np.mean([p["forms"][f] for p in per])) for f in FORMS},
                     "first_token": {f: float(np.mean([p["first_token"][f] for p in per])) for f in FREE},
                     "layers": [p["layers"] for p in per]}
        b, a = out["before"], out[name]
        print(f"{name}: five-form mean {b['mean']:.3f} -> {a['mean']:.3f}; blank {b['forms']['blank']:.2f} -> "
              f"{a['forms']['blank']:.2f}; blank first token {b['first_token']['blank']:.2f} -> "
              f"{a['first_token']['blank']:.2f}; layers {a['layers']}", flush=True)
    Path("bench/rocr_works.json").write_text(json.dumps(out, indent=1))
    for k in ("resid", "mlp"):
        for role in ROLES:
            row = out["trace"][k][role]
            if any(x is not None for x in row):
                best = max((x, i) for i, x in enumerate(row) if x is not None)
                print(f"trace {k:5s} {role:24s} peak recovery {best[0]:.2f} at layer {best[1]}")


if __name__ == "__main__":
    main()
