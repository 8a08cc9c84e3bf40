"""A benchmark's own metrics on the model as it is now (`score_benchmark`), next to repedit's forms.

    state = {}                                         # keeps the original model's answers between calls
    before = score_benchmark(h, bench, ids, state)     # the first call is the original model
    after = score_benchmark(h, bench, ids, state, reference=load_reference("retain-model.json"))
"""

from __future__ import annotations

import json
from pathlib import Path

from repedit.errors import InputError
from repedit.formats import check_format
from repedit.verify.benchmarks import editing, muse, tofu

SCORERS = {"tofu": tofu.score, "muse": muse.score, "wmdp": editing.wmdp, "counterfact": editing.counterfact,
           "zsre": editing.zsre}
#: new tokens for greedy answers, per format (TOFU's answers are sentences; CounterFact's a word or two)
MAX_NEW_TOKENS = {"tofu": 48, "muse": 32, "wmdp": 1, "counterfact": 12, "zsre": 12}


def score_benchmark(handle, bench, forget_ids=None, state: dict | None = None, reference: dict | None = None,
                    max_new_tokens: int | None = None) -> dict:
    """The benchmark's metrics for the forget items `forget_ids` (default: all of its forget split).
    `reference`: the retain model's numbers (`load_reference`) for TOFU's forget quality and MUSE's PrivLeak."""
    ids = set(forget_ids) if forget_ids is not None else {f.id for f in bench.forget}
    if not ids:
        raise InputError("score_benchmark needs at least one forget item")
    out = SCORERS[bench.format](handle, bench, ids, {} if state is None else state, reference,
                                max_new_tokens or MAX_NEW_TOKENS[bench.format])
    return {"format": bench.format, **out}


def load_reference(path: str | Path) -> dict:
    """The retain model's benchmark numbers: a repedit run's report.json (its `before.benchmark`, the
    run on the retain model), or the JSON `repedit benchmark score` writes."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no reference file {str(p)!r}; score the retain model with `repedit benchmark score "
                         "--model <retain model> ...` and pass the JSON it writes")
    data = json.loads(p.read_text())
    kind = "report" if isinstance(data, dict) and "edits" in data else "benchmark-score"   # a run's, or a score
    check_format(kind, data, p, redo="score the retain model again: `repedit benchmark score ... --out FILE`")
    ref = data.get("benchmark") or (data.get("before") or {}).get("benchmark") or data
    if "format" not in ref:
        raise InputError(f"{str(p)!r} holds no benchmark numbers (no 'format'); give the JSON `repedit benchmark "
                         "score` writes or a report.json of a run with [targets.benchmark]")
    return ref


#: the numbers each benchmark's papers lead with (dotted paths into `score_benchmark`'s output)
HEADLINE = {"tofu": ("forget.probability", "forget.rouge_l_recall", "forget.truth_ratio", "forget_quality",
                     "ks_vs_original_pvalue", "model_utility"),
            "muse": ("verbmem_forget.rouge_l_f1", "knowmem_forget.rouge_l_f1", "knowmem_retain.rouge_l_f1",
                     "privleak.privleak"),
            "wmdp": ("forget.accuracy", "retain.accuracy"),
            "counterfact": ("efficacy", "efficacy_new", "generalisation", "specificity"),
            "zsre": ("efficacy", "efficacy_new", "generalisation", "specificity")}


def headline(metrics: dict | None) -> dict[str, float | None]:
    """The benchmark's headline numbers as a flat {name: value} (missing parts left out)."""
    out = {}
    for path in HEADLINE.get((metrics or {}).get("format", ""), ()):
        v = metrics
        for part in path.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is not None or "." not in path:
            out[path] = v
    return out
