"""MRP on SmolLM2-135M: continual unlearning over 4 sequential tasks, hook and folded weight form,
and a relearning attack compared with gradient ascent (the numbers in the README and issue 6's note).

- 15 known capitals (greedy blank correct) split into 3 tasks of 5; retain = 10 other known
  capitals; others = 12 further known capitals never trained on; unrelated = 20 element symbols.
- After each task: answer probability (mean over blank, qa, paraphrase, adversarial; paraphrase is
  never trained on) of every task's forget set, retain, others, unrelated, and news perplexity, for
  the hook and the folded weight form; five-form greedy accuracy before and after the last task.
- Relearning: fine-tune all weights 30 steps (Adam, lr 1e-5) on 8 of the 15 forget facts (blank
  form), measure those and the 7 held out every 5 steps — with no edit, on the MRP hook model, the
  folded MRP model, and a gradient-ascent model (MLP output matrices, stopped at MRP's forget level).
MRP_WHERE=writers (default) trains the directions in the folded placement, so hook and weight form
are the same edit; MRP_WHERE=residual is the source's placement (one layer's residual output) with
its folded weight form measured separately. MRP_INIT=generalised (default) | difference.
Writes bench/mrp_continual_<where>_<init>.json.
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import repedit  # noqa: E402
from repedit.baselines.gradient import GradientConfig, gradient_unlearn  # noqa: E402
from repedit.edits import EditStack  # noqa: E402
from repedit.edits.fold import untie_embeddings  # noqa: E402
from repedit.edits.mrp import MRP, MRPConfig  # noqa: E402
from repedit.forward.answer_scores import answer_logprobs  # noqa: E402
from repedit.suites import load_suite, load_text  # noqa: E402
from repedit.verify.perplexity import perplexity  # noqa: E402
from repedit.verify.recall import known_facts, recall  # noqa: E402
from repedit.verify.relearn import relearn  # noqa: E402

FORMS = ("blank", "qa", "paraphrase", "adversarial")
N_TASKS, PER_TASK = 3, 5
WHERE = os.environ.get("MRP_WHERE", "writers")
INIT = os.environ.get("MRP_INIT", "generalised")


def prob(h, facts):
    return round(float(answer_logprobs(h, facts, FORMS).exp().mean()), 4)


def state(h, tasks, retain, others, unrelated, news, with_recall=True):
    out = {"forget_per_task": [prob(h, t) for t in tasks], "retain": prob(h, retain), "others": prob(h, others),
           "unrelated": prob(h, unrelated), "perplexity": round(perplexity(h, news), 3)}
    if with_recall:
        seen = [f for t in tasks for f in t]
        out["forget_accuracy_5forms"] = round(recall(h, seen, progress=False).mean_accuracy, 3) if seen else None
        out["others_accuracy_5forms"] = round(recall(h, others, progress=False).mean_accuracy, 3)
    return out


def main():
    t_all = time.perf_counter()
    h = repedit.load("smollm2-135m")
    known = known_facts(h, load_suite("capitals"))
    tasks = [known[i * PER_TASK: (i + 1) * PER_TASK] for i in range(N_TASKS)]
    forget = [f for t in tasks for f in t]
    retain, others = known[15:25], known[25:37]
    unrelated = known_facts(h, load_suite("elements"))[:20]
    news = load_text("news", "heldout")[:20]
    untie_embeddings(h)
    out = {"tasks": [[f.subject for f in t] for t in tasks], "retain": [f.subject for f in retain],
           "config": MRPConfig(where=WHERE, init=INIT).__dict__ | {"forms": list(MRPConfig().forms)}}
    out["before"] = state(h, tasks, retain, others, unrelated, news)
    print("before", out["before"], flush=True)
    mrp = MRP(h, MRPConfig(where=WHERE, init=INIT))
    out["after_task"] = []
    for i, task in enumerate(tasks):
        proj = mrp.task(task, retain)
        last = i == len(tasks) - 1
        stack = EditStack(h)
        stack.push(mrp.edit())
        folded = state(h, tasks, retain, others, unrelated, news, with_recall=last)
        stack.revert_all()
        entry = {"task": i, "k_total": proj.k, "train": mrp.log[-1], "folded": folded}
        if WHERE == "residual":
            with mrp.active():
                entry["hook"] = state(h, tasks, retain, others, unrelated, news, with_recall=last)
        out["after_task"].append(entry)
        print(f"task {i}", json.dumps(out["after_task"][-1]), flush=True)
    rl_train, rl_held = forget[::2], forget[1::2]
    out["relearn"] = {"train": [f.subject for f in rl_train], "held_out": [f.subject for f in rl_held]}
    out["relearn"]["none"] = relearn(h, rl_train, rl_held).to_json()
    if WHERE == "residual":
        out["relearn"]["mrp_hook"] = relearn(h, rl_train, rl_held, during=mrp.active).to_json()
    stack = EditStack(h)
    stack.push(mrp.edit())
    out["relearn"]["mrp_folded"] = relearn(h, rl_train, rl_held).to_json()
    stack.revert_all()
    level = out["after_task"][-1]["folded"]["forget_per_task"]
    stop_at = max(sum(level) / len(level), 0.002)
    ga = gradient_unlearn(h, forget, config=GradientConfig(steps=60, lr=1e-5, stop_at=stop_at))
    stack.push(ga)
    out["ga"] = {"stats": ga.stats, "state": state(h, tasks, retain, others, unrelated, news)}
    out["relearn"]["ga"] = relearn(h, rl_train, rl_held).to_json()
    stack.revert_all()
    for k in ("none", "mrp_hook", "mrp_folded", "ga"):
        if k not in out["relearn"]:
            continue
        r = out["relearn"][k]
        print(f"relearn {k}: train {r['train']}  held-out {r['held_out']}", flush=True)
    out["seconds_total"] = round(time.perf_counter() - t_all, 1)
    Path(__file__).with_name(f"mrp_continual_{WHERE}_{INIT}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
