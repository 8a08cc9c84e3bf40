"""MRP, three sequential tasks in the writers (exported) placement, for one initialisation.

MRP_INIT=generalised (default) | difference. Same split as bench/mrp_continual.py (3 tasks × 5 known
capitals, retain 10, others 12, 20 element symbols; answer probability mean over blank, qa,
paraphrase, adversarial; news perplexity, 20 docs). Writes bench/mrp_tasks_<init>.json.
Run with OMP_NUM_THREADS=1 on a shared 2-core machine.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import repedit  # noqa: E402
from repedit.edits import EditStack  # noqa: E402
from repedit.edits.fold import untie_embeddings  # noqa: E402
from repedit.edits.mrp import MRP, MRPConfig  # noqa: E402
from repedit.forward.answer_scores import answer_logprobs  # noqa: E402
from repedit.suites import load_suite, load_text  # noqa: E402
from repedit.verify.perplexity import perplexity  # noqa: E402
from repedit.verify.recall import known_facts  # noqa: E402

FORMS = ("blank", "qa", "paraphrase", "adversarial")
INIT = os.environ.get("MRP_INIT", "generalised")


def main():
    h = repedit.load("smollm2-135m")
    untie_embeddings(h)
    known = known_facts(h, load_suite("capitals"))
    tasks = [known[i * 5:(i + 1) * 5] for i in range(3)]
    retain, others = known[15:25], known[25:37]
    unrelated, news = known_facts(h, load_suite("elements"))[:20], load_text("news", "heldout")[:20]

    def p(facts):
        return round(float(answer_logprobs(h, facts, FORMS).exp().mean()), 4)

    mrp, out = MRP(h, MRPConfig(where="writers", init=INIT)), {"init": INIT, "after_task": []}
    for i, task in enumerate(tasks):
        mrp.task(task, retain)
        stack = EditStack(h)
        stack.push(mrp.edit())
        row = {"train": mrp.log[-1], "forget_per_task": [p(t) for t in tasks], "retain": p(retain),
               "others": p(others), "unrelated": p(unrelated), "perplexity": round(perplexity(h, news), 2)}
        stack.revert_all()
        out["after_task"].append(row)
        print(i, row, flush=True)
    Path(__file__).with_name(f"mrp_tasks_{INIT}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
