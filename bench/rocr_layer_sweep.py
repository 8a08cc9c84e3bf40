"""Choose ROCR's default edit layers for SmolLM2-135M by a sweep (numbers quoted in the README).

For each window of three consecutive layers: edit each of 6 known capitals (one at a time, reverted
after), redirecting the country to an invented one, and measure the answer probability (mean of
qa, blank, paraphrase and adversarial forms) of the target and of 12 other known capitals.
Prints target and neighbour retention (after / before) per window and writes bench/rocr_layer_sweep.json.
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import repedit  # noqa: E402
from repedit.edits import EditStack  # noqa: E402
from repedit.edits.rocr import ROCR, ROCRConfig  # noqa: E402
from repedit.forward.answer_scores import answer_logprobs  # noqa: E402
from repedit.suites import load_suite  # noqa: E402
from repedit.verify.recall import known_facts  # noqa: E402

FORMS = ("qa", "blank", "paraphrase", "adversarial")
WINDOWS = [(1, 2, 3), (3, 4, 5), (4, 5, 6), (6, 7, 8), (8, 9, 10), (11, 12, 13), (14, 15, 16), (18, 19, 20)]


def main():
    h = repedit.load("smollm2-135m")
    known = known_facts(h, load_suite("capitals"))
    targets, neighbours = known[:6], known[6:18]
    invented = [f.subject for f in load_suite("unknown-entities")]
    facts = targets + neighbours
    base = answer_logprobs(h, facts, FORMS).exp()
    rows = []
    for layers in WINDOWS:
        t0 = time.perf_counter()
        rocr = ROCR(h, ROCRConfig(layers=layers))
        keep_t, keep_n, secs = [], [], []
        for i, f in enumerate(targets):
            e = rocr.edit(f.subject, invented[i], remember=False)
            secs.append(e.stats["seconds"])
            stack = EditStack(h)
            stack.push(e)
            after = answer_logprobs(h, facts, FORMS).exp()
            stack.pop()
            keep_t.append(float(after[i] / base[i]))
            others = [j for j in range(len(targets), len(facts))]
            keep_n.append(float((after[others] / base[others]).mean()))
        row = {"layers": list(layers), "target_retention": sum(keep_t) / len(keep_t),
               "neighbour_retention": sum(keep_n) / len(keep_n), "seconds_per_edit": sum(secs) / len(secs),
               "stats_seconds": rocr.stats_seconds, "wall": time.perf_counter() - t0}
        rows.append(row)
        print(f"layers {layers}: target keeps {row['target_retention']:.3f} of its answer probability, "
              f"neighbours keep {row['neighbour_retention']:.3f}; {row['seconds_per_edit']:.2f}s per edit", flush=True)
    Path(__file__).with_suffix(".json").write_text(json.dumps({"targets": [f.subject for f in targets],
                                                               "neighbours": [f.subject for f in neighbours],
                                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
