"""One stage of bench/speed.py against the repedit of a given tree: `speed_worker.py TREE STAGE OUT THREADS`.

Uses only APIs that exist before and after issue 18's speed work, so the same script times both trees.
Writes {"seconds", "cpu_seconds", "numbers"} to OUT.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])

import torch  # noqa: E402

torch.set_num_threads(int(sys.argv[4]))

from repedit import load  # noqa: E402
from repedit.recipes.compare import compare_recipe  # noqa: E402
from repedit.recipes.measure import measure_facts, resolve  # noqa: E402
from repedit.recipes.methods import METHODS, Context, method_config  # noqa: E402
from repedit.recipes.schema import load_recipe  # noqa: E402

FORGET = ["France", "Japan", "Germany", "Italy"]


def _setup(method: str = "rocr"):
    toml = compare_recipe(FORGET, [method], name="speed", relearn_steps=0, trace_prompts=0, sae=None, quick=False,
                          seed=0)
    path = Path(tempfile.mkdtemp()) / "speed.toml"
    path.write_text(toml)
    recipe = load_recipe(path)
    handle = load("smollm2-135m")
    if METHODS[method].needs_untied:
        from repedit.edits.fold import untie_embeddings

        untie_embeddings(handle)
    return handle, recipe, resolve(handle, recipe)


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _build(method: str, forget_n: int | None = None):
    from repedit.models.presets import resolve_config

    handle, recipe, res = _setup(method)
    ctx = Context(handle, res.forget[:forget_n], res.retain, res.known, res.pool, recipe.targets.contexts,
                  recipe.attacks.sae, False, monitor=None, references=())
    cfg = resolve_config(method_config(method, recipe.edits[0].config), handle)
    return lambda: (torch.manual_seed(0), METHODS[method].build(ctx, cfg))[1]


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


def stage_mrp():
    built, wall, cpu = _timed(_build("mrp"))
    stats = built[0].stats
    return wall, cpu, {k: v for k, v in stats.items() if isinstance(v, (int, float)) and "second" not in k}


def stage_kn():
    from repedit.locate.knowledge_neurons import knowledge_neurons

    handle, recipe, res = _setup()
    kn, wall, cpu = _timed(lambda: knowledge_neurons(handle, res.forget[0], progress=False))
    return wall, cpu, {"neurons": [list(n) for n in kn.neurons], "threshold_share": kn.threshold_share,
                       "layer_max_attr": list(kn.layer_max_attr)}


if __name__ == "__main__":
    wall, cpu, numbers = globals()["stage_" + sys.argv[2].replace("-", "_")]()
    Path(sys.argv[3]).write_text(json.dumps({"seconds": wall, "cpu_seconds": cpu, "numbers": numbers}, default=str))
