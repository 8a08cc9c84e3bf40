"""Setup shared by the speed benches (bench/method_speed.py, bench/workers/speed_worker.py).

repedit is imported inside the functions, from whichever tree the caller put first on sys.path; only APIs
that exist in 6d49107 too are used.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

FORGET = ["France", "Japan", "Germany", "Italy"]


def timed(fn):
    """(fn(), wall seconds, process seconds)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def setup(method: str = "rocr"):
    """(handle, recipe, resolved targets) of the `repedit compare` recipe for `method` forgetting FORGET, on the
    default model (untied when the method needs it)."""
    from repedit import load
    from repedit.methods import METHODS
    from repedit.recipes.compare import compare_recipe
    from repedit.recipes.measure import resolve
    from repedit.recipes.schema import load_recipe

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


def builder(method: str, forget_n: int | None = None, **changes):
    """A function building `method` as the compare recipe configures it (fields in `changes` replaced)."""
    import dataclasses

    import torch

    from repedit.methods import METHODS, Context, method_config
    from repedit.models.presets import resolve_config

    handle, recipe, res = setup(method)
    ctx = Context(handle, res.forget[:forget_n], res.retain, res.known, res.pool, recipe.targets.contexts,
                  recipe.attacks.sae, False, monitor=None, references=())
    cfg = dataclasses.replace(resolve_config(method_config(method, recipe.edits[0].config), handle), **changes)
    return lambda: (torch.manual_seed(0), METHODS[method].build(ctx, cfg))[1]
