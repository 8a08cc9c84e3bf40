"""One stage of bench/speed.py against the repedit of a given tree: `speed_worker.py TREE STAGE OUT THREADS`.

Uses only APIs that exist before and after issue 18's speed work, so the same script times both trees.
Writes {"seconds", "cpu_seconds", "numbers", "peak_rss_mb"} to OUT (the worker's peak resident memory: the
model, its setup and the stage).
"""

import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])

import torch  # noqa: E402

torch.set_num_threads(int(sys.argv[4]))

# bench_common is this script's neighbour (its folder is on sys.path, after the tree), not the tree's
from bench_common import builder as _build  # noqa: E402
from bench_common import setup as _setup  # noqa: E402
from bench_common import timed as _timed  # noqa: E402

from repedit.methods import METHODS, Context, method_config  # noqa: E402
from repedit.recipes.measure import measure_facts  # noqa: E402


def _factor_norms(built) -> list:
    return [[float(torch.linalg.norm(d.u.float() @ d.v.float().T)) if hasattr(d, "u") else None
             for d in e.deltas] for e in built]


def stage_measure():
    handle, recipe, res = _setup()
    measure_facts(handle, res, recipe)                               # warm: tokenizer, caches, knownness fit
    m, wall, cpu = _timed(lambda: measure_facts(handle, res, recipe))
    numbers = {k: {"mean_probability": m[k]["mean_probability"], "mean_accuracy": m[k]["mean_accuracy"],
                   "forms": m[k]["forms"]} for k in ("forget", "neighbours", "unrelated")}
    numbers |= {"perplexity": m["perplexity"], "knownness": {k: v for k, v in m["knownness"].items()
                                                             if isinstance(v, float)}}
    return wall, cpu, numbers


def stage_rocr():
    build = _build("rocr")
    build()                                                          # key statistics computed and cached
    built, wall, cpu = _timed(build)
    return wall / len(built), cpu / len(built), {"delta_norms": _factor_norms(built)}


def stage_sae_align():
    built, wall, cpu = _timed(_build("sae-align", 1))
    return wall, cpu, {"final": built[0].stats["final"], "delta_norms": _factor_norms(built)}


def stage_sae_align_4():
    """All four targets, as a compare run builds them (seconds per target)."""
    built, wall, cpu = _timed(_build("sae-align"))
    return wall / len(built), cpu / len(built), {"final": [e.stats["final"] for e in built],
                                                 "delta_norms": _factor_norms(built)}


def stage_monitor():
    """One check of the trained baselines' monitor in a compare run (forget and neighbours; mean of 3)."""
    from repedit.recipes.runner import _monitor

    handle, recipe, res = _setup("ga")
    monitor = _monitor(handle, res, recipe)
    with torch.no_grad():
        monitor()                                                    # warm: tokenizer, chat template
        values, wall, cpu = _timed(lambda: [monitor() for _ in range(3)])
    return wall / 3, cpu / 3, values[0]


def stage_mrp():
    built, wall, cpu = _timed(_build("mrp"))
    stats = built[0].stats
    return wall, cpu, {k: v for k, v in stats.items() if isinstance(v, (int, float)) and "second" not in k}


def _trained(method: str, steps: int = 5):
    """Seconds per training step of a trained baseline (the compare recipe's config, `steps` steps, no early
    stop, no monitor); its numbers: the per-step forget probability and the norms of the changes."""
    built, wall, cpu = _timed(_build(method, steps=steps, stop_at=0.0))
    stats = built[0].stats
    numbers = {"forget": stats.get("forget_probability_per_step") or [r["forget"] for r in stats["trajectory"]],
               "change_norms": [round(float(d.d.norm()), 6) for d in built[0].deltas]}
    return wall / steps, cpu / steps, numbers


def stage_ga():
    return _trained("ga")


def stage_npo():
    return _trained("npo")


def stage_rmu():
    return _trained("rmu", 10)


def stage_relearn():
    """The compare recipe's relearning attack (10 steps on the untied model, every weight fine-tuned)."""
    from repedit.verify.relearn import relearn

    handle, recipe, res = _setup("mrp")                              # untied, as in a compare run
    a = recipe.attacks
    curve, wall, cpu = _timed(lambda: relearn(handle, res.forget[::2], res.forget[1::2], steps=10, lr=a.relearn_lr,
                                              every=5))
    return wall, cpu, {"train": curve.train, "held_out": curve.held_out}


def stage_attacks():
    """One round of a compare run's attacks on an edited model (prefixes, trace detection over 40 prompts, the
    10-step relearning attack), the second round (the first warms caches); ROCR's four edits applied."""
    import tempfile
    from pathlib import Path

    from bench_common import FORGET

    from repedit import load
    from repedit.edits.fold import untie_embeddings
    from repedit.edits.stack import EditStack
    from repedit.recipes import runner
    from repedit.recipes.compare import compare_recipe
    from repedit.recipes.measure import resolve
    from repedit.recipes.schema import load_recipe

    path = Path(tempfile.mkdtemp()) / "attacks.toml"
    path.write_text(compare_recipe(FORGET, ["rocr"], name="attacks", relearn_steps=10, trace_prompts=40, sae=None,
                                   quick=False, seed=0))
    recipe = load_recipe(path)
    handle = load("smollm2-135m")
    untie_embeddings(handle)
    res = resolve(handle, recipe)
    orig = runner._original_records(handle, recipe, res, {})
    ctx = Context(handle, res.forget, res.retain, res.known, res.pool, recipe.targets.contexts, None, False)
    stack = EditStack(handle)
    from repedit.models.presets import resolve_config

    for e in METHODS["rocr"].build(ctx, resolve_config(method_config("rocr", recipe.edits[0].config), handle)):
        stack.push(e)
    runner._attacks(handle, recipe, res, orig, stack)
    out, wall, cpu = _timed(lambda: runner._attacks(handle, recipe, res, orig, stack))
    stack.revert_all()
    return wall, cpu, {"prefixes": out["prefixes"], "trace_accuracy": out["trace_accuracy"],
                       "relearn": {k: out["relearn"][k] for k in ("train", "held_out")}}


def stage_kn():
    from repedit.locate.knowledge_neurons import knowledge_neurons

    handle, recipe, res = _setup()
    kn, wall, cpu = _timed(lambda: knowledge_neurons(handle, res.forget[0], progress=False))
    return wall, cpu, {"neurons": [list(n) for n in kn.neurons], "threshold_share": kn.threshold_share,
                       "layer_max_attr": list(kn.layer_max_attr)}


if __name__ == "__main__":
    wall, cpu, numbers = globals()["stage_" + sys.argv[2].replace("-", "_")]()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024                # KiB on Linux
    Path(sys.argv[3]).write_text(json.dumps({"seconds": wall, "cpu_seconds": cpu, "numbers": numbers,
                                             "peak_rss_mb": round(peak, 1)}, default=str))
