"""Process time of one MRP task and of knowledge neurons per fact, with the numbers each computed, for the
repedit of a given tree (issue 18.1: MRP <= 60 s per task, knowledge neurons <= 20 s per fact on 2 cores).

    python bench/method_speed.py [TREE] [--stages mrp,kn] [--threads 1] [--kn-facts France,Japan] [--out F.json]

TREE (default: this checkout) is put first on sys.path, so the same script times an older tree (e.g. a git
worktree of 6d49107); it uses only APIs that exist there too. MRP is the `repedit compare` default (forget
France, Japan, Germany, Italy of "capitals", its 10 retain facts, the model's preset config) built as the
runner builds it (`METHODS["mrp"].build`); its numbers are the forget and retain facts' answer log-probs
(blank, qa, paraphrase, adversarial) before and with the folded edit applied. Knowledge neurons run
`knowledge_neurons(handle, fact)` with its defaults; the numbers are the neurons, the share p and the
per-layer maximum attribution. Times are process seconds (steady on a shared machine) beside wall seconds.
Prints one JSON object: {"mrp_task_s", "kn_fact_s", "mrp": {...}, "kn": {...}, "threads", "tree"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "workers"))   # bench_common, shared with speed_worker

from bench_common import setup, timed  # noqa: E402

FORMS = ("blank", "qa", "paraphrase", "adversarial")


def _logprobs(handle, facts) -> list[float]:
    from repedit.forward.answer_scores import answer_logprobs

    return [round(float(x), 5) for x in answer_logprobs(handle, facts, FORMS)]


def bench_mrp() -> dict:
    import torch

    from repedit.edits import applied
    from repedit.methods import METHODS, Context, method_config
    from repedit.models.presets import resolve_config

    handle, recipe, res = setup("mrp")
    ctx = Context(handle, res.forget, res.retain, res.known, res.pool, recipe.targets.contexts, recipe.attacks.sae,
                  False, monitor=None, references=())
    cfg = resolve_config(method_config("mrp", recipe.edits[0].config), handle)
    before = {"forget": _logprobs(handle, res.forget), "retain": _logprobs(handle, res.retain)}
    torch.manual_seed(0)
    built, wall, cpu = timed(lambda: METHODS["mrp"].build(ctx, cfg))
    with applied(handle, built[0]):
        after = {"forget": _logprobs(handle, res.forget), "retain": _logprobs(handle, res.retain)}
    mean = lambda xs: round(sum(xs) / len(xs), 5)  # noqa: E731
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "forget": [f.subject for f in res.forget],
            "retain": [f.subject for f in res.retain], "before": before, "after": after,
            "mean_before": {k: mean(v) for k, v in before.items()},
            "mean_after": {k: mean(v) for k, v in after.items()}}


def bench_kn(subjects: list[str]) -> dict:
    from repedit import load
    from repedit.locate.knowledge_neurons import knowledge_neurons
    from repedit.suites import load_suite

    handle = load("smollm2-135m")
    caps = {f.subject: f for f in load_suite("capitals")}
    out = {}
    for s in subjects:
        kn, wall, cpu = timed(lambda s=s: knowledge_neurons(handle, caps[s], progress=False))
        out[s] = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "neurons": [list(n) for n in kn.neurons],
                  "threshold_share": round(kn.threshold_share, 4),
                  "layer_max_attr": [round(x, 6) for x in kn.layer_max_attr],
                  "per_prompt": [[list(n) for n in p] for p in kn.per_prompt]}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--stages", default="mrp,kn")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kn-facts", default="France")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import torch

    torch.set_num_threads(args.threads)
    stages = args.stages.split(",")
    result: dict = {"tree": args.tree, "threads": args.threads}
    if "mrp" in stages:
        result["mrp"] = bench_mrp()
        result["mrp_task_s"] = result["mrp"]["cpu_s"]
    if "kn" in stages:
        result["kn"] = bench_kn(args.kn_facts.split(","))
        result["kn_fact_s"] = round(sum(v["cpu_s"] for v in result["kn"].values()) / len(result["kn"]), 2)
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
