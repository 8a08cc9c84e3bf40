"""Measured effect of SAE unknown-alignment on SmolLM2-135M with the shipped SAE (layer 15).

- 5 target capitals the model knows (greedy fill-in-the-blank correct), each edited alone
  (default `SAEAlignConfig`) and reverted after;
- P(known) of the target by a logistic classifier on SAE codes (`repedit.verify.sae_codes`),
  fitted on the original model in frames the edit never trains on, its unknown entities disjoint
  from the edit's reference unknown entities;
- target recall in all five forms (greedy accuracy, answer probability) before and after;
- 20 neighbour capitals and 20 unrelated facts (element symbols), forms blank + qa; the retain
  entities the edit protects are other known capitals, disjoint from the neighbours;
- perplexity on 20 news + 20 wiki held-out documents; seconds per edit.
Writes bench/sae_align_effect.json. Run with OMP_NUM_THREADS=1 on a shared 2-core machine.
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.edits.sae_align import FRAMES, SAEAlignConfig, sae_align  # noqa: E402
from repedit.fit.saes import load_sae  # noqa: E402
from repedit.suites import load_suite, load_text, unknown_entities  # noqa: E402
from repedit.verify.recall import known_facts  # noqa: E402
from repedit.verify.sae_codes import fit_knownness, measure, sae_align_effect  # noqa: E402

TARGETS = ("France", "Japan", "Germany", "Italy", "Russia")
SAE_DIR = Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk"


def main():
    t_all = time.perf_counter()
    h = repedit.load("smollm2-135m")
    sae = load_sae(SAE_DIR)
    known = known_facts(h, load_suite("capitals"))
    by = {f.subject: f for f in known}
    missing = [t for t in TARGETS if t not in by]
    if missing:
        raise SystemExit(f"the model does not know {missing}; pick other targets")
    others = [f for f in known if f.subject not in TARGETS]
    neighbours, retain = others[:20], others[20:]
    unrelated = known_facts(h, load_suite("elements"))[:20]
    unknown = unknown_entities()
    edit_unknown, clf_unknown = unknown[:20], unknown[20:]
    # classifier: the known capitals other than the targets; unknown entities disjoint from the edit's
    clf = fit_knownness(h, sae, [f.subject for f in others], clf_unknown)
    texts = load_text("news", "heldout")[:20] + load_text("wiki", "heldout")[:20]
    cfg = SAEAlignConfig()
    base = measure(h, sae, clf, by[TARGETS[0]], neighbours, unrelated, texts)
    out = {"config": cfg.__dict__ | {"frames": list(cfg.frames or FRAMES)}, "targets": list(TARGETS),
           "neighbours": [f.subject for f in neighbours], "retain": [f.subject for f in retain],
           "classifier_cv_accuracy": clf.cv_accuracy, "classifier_frames": list(clf.frames), "rows": []}
    print(f"classifier CV accuracy {clf.cv_accuracy:.3f}; retain {len(retain)}; perplexity {base['perplexity']:.2f}",
          flush=True)
    for t in TARGETS:
        before = measure(h, sae, clf, by[t]) | {k: v for k, v in base.items() if k not in ("p_known", "target")}
        # reference known entities: the neighbours' and retain lists (the edit pulls away from their mean)
        edit = sae_align(h, sae, by[t], [f.subject for f in others], edit_unknown, retain=retain, config=cfg)
        eff = sae_align_effect(h, sae, edit, clf, by[t], neighbours, unrelated, texts, before=before)
        row = {"target": t, "seconds": edit.stats["seconds"], "train_final": edit.stats["final"],
               "before": eff.before, "after": eff.after}
        out["rows"].append(row)
        b, a = eff.before, eff.after
        print(f"{t}: P(known) {b['p_known']:.3f}->{a['p_known']:.3f}; target acc {b['target']['mean_accuracy']:.2f}->"
              f"{a['target']['mean_accuracy']:.2f} prob {b['target']['mean_probability']:.3f}->"
              f"{a['target']['mean_probability']:.3f}; neighbours prob {b['neighbours']['mean_probability']:.3f}->"
              f"{a['neighbours']['mean_probability']:.3f} acc {b['neighbours']['mean_accuracy']:.2f}->"
              f"{a['neighbours']['mean_accuracy']:.2f}; unrelated {b['unrelated']['mean_probability']:.3f}->"
              f"{a['unrelated']['mean_probability']:.3f}; ppl {b['perplexity']:.2f}->{a['perplexity']:.2f}; "
              f"{edit.stats['seconds']:.0f}s", flush=True)
    rows = out["rows"]
    keys = {"p_known": lambda m: m["p_known"], "target_accuracy": lambda m: m["target"]["mean_accuracy"],
            "target_probability": lambda m: m["target"]["mean_probability"],
            "neighbours_probability": lambda m: m["neighbours"]["mean_probability"],
            "neighbours_accuracy": lambda m: m["neighbours"]["mean_accuracy"],
            "neighbours_p_known": lambda m: m["neighbours_p_known"],
            "unrelated_probability": lambda m: m["unrelated"]["mean_probability"],
            "perplexity": lambda m: m["perplexity"]}
    out["mean"] = {k: {"before": float(np.mean([fn(r["before"]) for r in rows])),
                       "after": float(np.mean([fn(r["after"]) for r in rows]))} for k, fn in keys.items()}
    out["mean"]["seconds_per_edit"] = float(np.mean([r["seconds"] for r in rows]))
    out["wall_seconds"] = time.perf_counter() - t_all
    (Path(__file__).parent / "sae_align_effect.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out["mean"], indent=1))


if __name__ == "__main__":
    main()
