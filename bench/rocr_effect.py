"""Measured effect of ROCR on SmolLM2-135M (the numbers in the README and the issue's closing note).

- 10 target capitals the model knows (greedy fill-in-the-blank correct), each redirected to an
  invented country: recall in all five forms before and after its own edit (reverted after);
- 20 neighbour capitals and 20 unrelated facts (element symbols) after each edit (mean);
- general-text perplexity (news held-out, 40 docs) before and after;
- time per edit (the one-time key statistics are reported separately);
- sequential editing: the 10 edits pushed on one EditStack (earlier keys protected), then every
  target, neighbours, unrelated facts and perplexity measured again.
By default the keys of the remaining known countries (disjoint from targets and measured neighbours)
are protected (`ROCR(..., protect=...)`); ROCR_PROTECT=0 runs without.
Writes bench/rocr_effect.json (bench/rocr_effect_unprotected.json with ROCR_PROTECT=0).
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.edits import EditStack  # noqa: E402
from repedit.edits.rocr import ROCR  # noqa: E402
from repedit.suites import FORMS, load_suite, load_text  # noqa: E402
from repedit.verify.perplexity import perplexity  # noqa: E402
from repedit.verify.recall import recall  # noqa: E402

PROTECT = os.environ.get("ROCR_PROTECT", "1") == "1"


def measure(h, facts, forms=FORMS):
    return recall(h, facts, forms, progress=False).summary()


def main():
    t_all = time.perf_counter()
    h = repedit.load("smollm2-135m")
    from repedit.verify.recall import known_facts

    known = known_facts(h, load_suite("capitals"))
    targets, neighbours = known[:10], known[10:30]
    unrelated = known_facts(h, load_suite("elements"))[:20]
    invented = [f.subject for f in load_suite("unknown-entities")]
    news = load_text("news", "heldout")[:40]
    out = {"targets": [f.subject for f in targets], "redirect_to": invented[:10]}
    out["before"] = {"targets": measure(h, targets), "neighbours": measure(h, neighbours, ("blank", "qa")),
                     "unrelated": measure(h, unrelated, ("blank", "qa")), "perplexity": perplexity(h, news)}
    print("before", json.dumps(out["before"], indent=1)[:600], flush=True)
    protect = [f.subject for f in known[30:60]]          # other countries, disjoint from targets/neighbours
    out["protected"] = protect if PROTECT else []
    rocr = ROCR(h, progress=True, protect=protect if PROTECT else ())
    out["stats_seconds"] = rocr.stats_seconds
    single = []
    for f, inv in zip(targets, invented):
        e = rocr.edit(f.subject, inv, remember=False)
        stack = EditStack(h)
        stack.push(e)
        row = {"target": f.subject, "seconds": e.stats["seconds"], "after": measure(h, [f]),
               "neighbours": measure(h, neighbours, ("blank", "qa"))["mean_probability"],
               "unrelated": measure(h, unrelated, ("blank", "qa"))["mean_probability"]}
        stack.pop()
        single.append(row)
        print(f"{f.subject} -> {inv}: target mean acc {row['after']['mean_accuracy']:.2f} "
              f"prob {row['after']['mean_probability']:.3f}; neighbours {row['neighbours']:.3f}; "
              f"{row['seconds']:.2f}s", flush=True)
    out["single"] = single
    out["single_after_targets"] = {form: float(np.mean([r["after"][form]["accuracy"] for r in single]))
                                   for form in FORMS}
    ppl_single = []
    for f, inv in list(zip(targets, invented))[:3]:
        with EditStack(h).temporarily(rocr.edit(f.subject, inv, remember=False)):
            ppl_single.append(perplexity(h, news))
    out["single_perplexity"] = ppl_single
    # sequential: one stack, ten edits
    stack = EditStack(h)
    t0 = time.perf_counter()
    rocr.edits(list(zip([f.subject for f in targets], invented)), stack)
    out["sequential_seconds"] = time.perf_counter() - t0
    out["sequential"] = {"targets": measure(h, targets),
                         "per_target": recall(h, targets, FORMS, progress=False).per_fact,
                         "neighbours": measure(h, neighbours, ("blank", "qa")),
                         "unrelated": measure(h, unrelated, ("blank", "qa")), "perplexity": perplexity(h, news)}
    stack.revert_all()
    out["wall_seconds"] = time.perf_counter() - t_all
    name = "rocr_effect.json" if PROTECT else "rocr_effect_unprotected.json"
    (Path(__file__).parent / name).write_text(json.dumps(out, indent=1, default=str))
    b, s = out["before"], out["sequential"]
    print(f"targets mean accuracy {b['targets']['mean_accuracy']:.2f} -> single "
          f"{np.mean([r['after']['mean_accuracy'] for r in single]):.2f}"
          f" -> sequential {s['targets']['mean_accuracy']:.2f}")
    print(f"neighbours prob {b['neighbours']['mean_probability']:.3f} -> single "
          f"{np.mean([r['neighbours'] for r in single]):.3f}"
          f" -> sequential {s['neighbours']['mean_probability']:.3f}")
    print(f"unrelated prob {b['unrelated']['mean_probability']:.3f} -> sequential "
          f"{s['unrelated']['mean_probability']:.3f}")
    print(f"perplexity {b['perplexity']:.2f} -> single {np.mean(ppl_single):.2f} -> sequential {s['perplexity']:.2f}")
    print(f"seconds per edit {np.mean([r['seconds'] for r in single]):.2f}; statistics {out['stats_seconds']:.1f}s")


if __name__ == "__main__":
    main()
