"""The comparison recipe behind `repedit compare`: repedit's methods and the baselines on the same
targets (a TOML recipe, validated like any other)."""

from __future__ import annotations

import json
from collections.abc import Sequence

FACT_METHODS = ("rocr", "mrp", "sae-align", "ga", "npo", "rmu", "leace")
RECOVERY = ("quantisation", "weight_diff", "extraction", "membership", "remind")   #: [attacks] keys



def _toml(value) -> str:
    """A TOML value (string, list, number) for recipe text: JSON's basic strings are TOML's, provided characters
    outside the Basic Multilingual Plane stay as they are (JSON's ASCII escapes would write surrogate pairs)."""
    return json.dumps(value, ensure_ascii=False)

def compare_recipe(forget: list[str], methods: list[str], *, name: str, relearn_steps: int, trace_prompts: int,
                   sae: str | None, quick: bool, seed: int, model: str = "smollm2-135m",
                   dtype: str = "float32", suite: str = "capitals", lm_eval_tasks: Sequence[str] = (),
                   lm_eval_include: str | None = None, lm_eval_limit: int = 0, benchmark: dict | None = None,
                   recovery: dict | None = None) -> str:
    """The TOML of a comparison recipe (validated like any other). Quick GA / NPO train four MLP output
    matrices starting 12 layers below the top (SmolLM2-135M: 18–21; the layer count comes from the
    model's preset). `lm_eval_*`: the [verify] lm-eval tasks scored before and after each edit. `benchmark`:
    a [targets.benchmark] table (format, path[, split, limit]) as the targets (then `forget` may be empty:
    the whole forget split). `recovery`: [attacks] settings of the recovery attacks ({"weight_diff": True,
    "quantisation": ["int8", ...], ...})."""
    from repedit.models.presets import preset_for

    n_layers = int(preset_for(model).to_dict()["architecture"]["n_layers"])
    late = list(range(max(0, n_layers - 12), max(0, n_layers - 12) + 4))
    quick_cfg = {"rocr": "{ stats_tokens = 6000 }", "mrp": "{ steps = 6 }", "sae-align": "{ steps = 10 }",
                 "ga": f"{{ steps = 10, lr = 1e-4, layers = {late} }}",
                 "npo": f"{{ steps = 10, lr = 1e-4, layers = {late} }}", "rmu": "{ steps = 10 }",
                 "leace": "{}"}
    # the trained baselines run until they pass the lowest level a repedit method reaches (or run out of
    # steps); their tracked trajectory gives the time to every level in between
    full_cfg = {"ga": '{ steps = 60, lr = 3e-5, forms = ["blank", "qa", "adversarial"], retain_weight = 1.0, '
                      'stop_at = 0.02 }',
                "npo": '{ steps = 60, lr = 3e-5, forms = ["blank", "qa", "adversarial"], retain_weight = 1.0, '
                       'stop_at = 0.02 }',
                "rmu": "{ stop_at = 0.02 }"}
    lines = [f"[run]\nname = {_toml(name)}\nseed = {int(seed)}\n",
             f"[model]\nid = {_toml(model)}\ndtype = {_toml(dtype)}\n",
             "[targets]", f"suite = {_toml(suite)}",
             "forget = [" + ", ".join(_toml(s) for s in forget) + "]", "retain = 10", "neighbours = 12\n",
             *(["[targets.benchmark]", *(f"{k} = {_toml(v)}" for k, v in benchmark.items() if v), ""]
               if benchmark else []),
             "[attacks]", f"relearn_steps = {relearn_steps}", f"trace_prompts = {trace_prompts}"]
    if sae:
        lines.append(f"sae = {_toml(sae)}")
    lines += [f"{k} = {_toml(v)}" for k, v in (recovery or {}).items()]
    lines.append("")
    if lm_eval_tasks:
        lines += ["[verify]", f"lm_eval_tasks = {_toml(list(lm_eval_tasks))}",
                  f"lm_eval_limit = {lm_eval_limit}"]
        lines += [f"lm_eval_include = {_toml(lm_eval_include)}"] if lm_eval_include else []
        lines.append("")
    for m in methods:
        cfg = quick_cfg.get(m, "{}") if quick else full_cfg.get(m, "{}")
        lines += ["[[edit]]", f"method = {_toml(m)}", f"config = {cfg}", ""]
    return "\n".join(lines)
