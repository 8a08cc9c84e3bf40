"""Why does ROCR miss on facts other than capitals, and do traced layers or the refusal value fix it?

For each suite (default: capitals — the tuning suite — and the held-out families people-occupations and
us-cities, filtered to what SmolLM2-135M knows), 6 target facts are edited one at a time (each reverted
after) under four ROCR settings — the preset layers or per-target traced layers (causal tracing,
`layers = "traced"`), each with an invented same-kind redirect or the optimised refusal value — and
recall is measured in the five forms (answer probability) on the target, plus 10 neighbours
(blank + qa). The forget fraction is after / before of the five-form mean. Writes bench/rocr_kinds.json.

    .venv/bin/python bench/rocr_kinds.py [suite ...]        # ROCR_SETTINGS=preset/unknown,traced/unknown: a subset
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.edits.rocr import ROCR, ROCRConfig  # noqa: E402
from repedit.edits.stack import applied  # noqa: E402
from repedit.methods import rocr_redirects  # noqa: E402
from repedit.suites import FORMS, load_suite  # noqa: E402
from repedit.verify.recall import recall  # noqa: E402

SETTINGS = {"preset/unknown": {}, "preset/refusal": {"redirect": "refusal"},
            "traced/unknown": {"layers": "traced"}, "traced/refusal": {"layers": "traced", "redirect": "refusal"}}
N_TARGETS, N_NEIGHBOURS = 6, 10
if os.environ.get("ROCR_SETTINGS"):
    SETTINGS = {k: SETTINGS[k] for k in os.environ["ROCR_SETTINGS"].split(",")}


def known_suite(name: str, model_id: str):
    path = Path("probes/facts") / f"{name}.known-{model_id}.jsonl"
    return load_suite(str(path) if path.exists() else name)


def main(suites):
    h = repedit.load("smollm2-135m")
    out_path = Path("bench/rocr_kinds.json")
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    for suite in suites:
        facts = known_suite(suite, "smollm2-135m")
        targets, neighbours = facts[:N_TARGETS], facts[N_TARGETS:N_TARGETS + N_NEIGHBOURS]
        before = recall(h, targets, FORMS, progress=False)
        n_before = recall(h, neighbours, ("blank", "qa"), progress=False).mean_probability
        row = out.get(suite, {}) | {"targets": [f.subject for f in targets], "before": before.summary(),
                                    "neighbours_before": n_before}
        for name, kw in SETTINGS.items():
            t0 = time.perf_counter()
            rocr = ROCR(h, ROCRConfig(stats_tokens=40_000, **kw))
            redirects = rocr_redirects(targets, rocr.config.redirect)
            forms, neigh, layers = {f: [] for f in FORMS}, [], []
            for fact, redirect in zip(targets, redirects):
                edit = rocr.edit(fact.subject, redirect, fact=fact, remember=False)
                layers.append(edit.stats["layers"])
                with applied(h, edit):
                    r = recall(h, [fact], FORMS, progress=False)
                    for f in FORMS:
                        forms[f].append(r.forms[f].probability)
                    neigh.append(recall(h, neighbours, ("blank", "qa"), progress=False).mean_probability)
            after = {f: float(np.mean(v)) for f, v in forms.items()}
            mean_after = float(np.mean(list(after.values())))
            row[name] = {"forms_after": after, "mean_after": mean_after,
                         "forget_fraction": mean_after / before.mean_probability,
                         "neighbours_after": float(np.mean(neigh)), "layers": layers,
                         "seconds": round(time.perf_counter() - t0, 1)}
            blank0 = before.forms["blank"].probability
            print(f"{suite:20s} {name:15s} forget {before.mean_probability:.3f} -> {mean_after:.3f} "
                  f"(fraction {mean_after / before.mean_probability:.2f}); blank {blank0:.2f} -> {after['blank']:.2f}"
                  f"; neighbours {n_before:.3f} -> {np.mean(neigh):.3f}; layers {layers}", flush=True)
        out[suite] = row
        out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["capitals", "people-occupations", "us-cities"])
