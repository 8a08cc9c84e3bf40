"""Capability scores of the live model with lm-eval tasks (e.g. before and after an edit).

`lm_eval_scores(handle, ["my_task"], include_path="tasks/")` wraps `handle.model` and
`handle.tokenizer` in lm-eval's `HFLM` (no export) and runs `lm_eval.simple_evaluate` with fixed
seeds. Tasks are looked up in `include_path` (a folder of lm-eval task YAMLs) and lm-eval's built-in
tasks; lm-eval's index of its ~14k built-in YAMLs (seconds) is read only for names the folder lacks.
A relative `dataset_kwargs.data_files` path in a local YAML is read from that YAML's folder.

The call leaves nothing behind: train/eval flags, tied parameters, the tokenizer's padding, the
global RNG states (lm-eval seeds them) and lm-eval's log level are as they were. Log-softmax runs in
float32 whatever the model's dtype (bfloat16 logits are upcast before the choice log-probs).
Needs the `eval` extra: `pip install 'repedit[eval]'`.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from repedit.errors import ReprEditError, close_matches

SEED = 1234                 #: lm-eval's default seeds (python's is 0 there); fixed, so runs repeat exactly


class LmEvalMissingError(ReprEditError, ImportError):
    """lm-eval is not installed (the message names the extra that installs it)."""


class TaskNotFoundError(ReprEditError, KeyError):
    """An lm-eval task name is neither in the include folder nor among lm-eval's built-in tasks."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


def has_lm_eval() -> bool:
    try:
        import lm_eval.tasks  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not has_lm_eval():
        raise LmEvalMissingError("lm-eval tasks need the lm-eval package: pip install 'repedit[eval]' "
                                 "(lm-eval==0.4.13)")


@functools.lru_cache(maxsize=8)
def available_tasks(include_path: str | None, defaults: bool) -> frozenset[str]:
    """Task, group and tag names lm-eval indexes in `include_path` (and its built-ins if `defaults`)."""
    _require()
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_path=include_path, include_defaults=defaults).all_tasks)


def _include(include_path) -> str | None:
    return None if include_path is None else str(Path(include_path).expanduser().resolve())


def check_tasks(tasks: Sequence[str], include_path: str | Path | None = None) -> bool:
    """Raise TaskNotFoundError (listing close matches) unless every task exists; returns whether the
    include folder alone holds them all (then lm-eval's built-in index is not needed)."""
    include = _include(include_path)
    local = available_tasks(include, False) if include else frozenset()
    missing = [t for t in tasks if t not in local]
    if not missing:
        return True
    known = available_tasks(include, True)
    for t in missing:
        if t not in known:
            where = (f"is neither in the include folder {include!r} (tasks there: {sorted(local)[:10]}) nor "
                     "among" if include else "is not among")
            raise TaskNotFoundError(
                f"lm-eval task {t!r} {where} lm-eval's built-in tasks; close: "
                f"{close_matches(t, sorted(local) + sorted(known - local), 5)}; valid: a task of a YAML in "
                "lm_eval_include (include_path) or a built-in (`lm_eval ls tasks`)")
    return False


def _specs(manager, tasks: Sequence[str]) -> list:
    """Task names, except local YAML tasks with relative data_files: their config, paths resolved."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    specs: list = []
    for name in tasks:
        entry = manager.task_index.get(name)
        files = ((entry.cfg or {}).get("dataset_kwargs") or {}).get("data_files") if entry else None
        if entry is None or entry.kind != Kind.TASK or entry.yaml_path is None or not files:
            specs.append(name)
            continue
        cfg = copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=True))
        kwargs = cfg["dataset_kwargs"]
        kwargs["data_files"] = _beside(kwargs["data_files"], Path(entry.yaml_path).parent)
        specs.append(cfg)
    return specs


def _beside(files, folder: Path):
    """data_files (a path, a list, or {split: path or list}) with relative paths that exist in `folder` made
    absolute (else left as they are: lm-eval reads them from the current folder)."""
    if isinstance(files, dict):
        return {k: _beside(v, folder) for k, v in files.items()}
    if isinstance(files, list):
        return [_beside(v, folder) for v in files]
    return str(folder / files) if isinstance(files, str) and (folder / files).exists() else files


@contextmanager
def _preserved(model) -> Iterator[None]:
    """Restore what HFLM and simple_evaluate change: train flags, tied parameters (HFLM calls
    `tie_weights`), global RNG states, lm-eval's log level; no gradients inside."""
    flags = [(m, m.training) for m in model.modules()]
    params = dict(model.named_parameters(remove_duplicate=False))
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield
    finally:
        for name, p in model.named_parameters(remove_duplicate=False):
            if p is not params[name]:                           # re-tied or replaced: put the original back
                owner, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(owner), leaf, params[name])
        for m, training in flags:
            m.training = training
        random.setstate(py)
        np.random.set_state(np_state)
        log.setLevel(level)


def _plain(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def lm_eval_scores(handle, tasks: Sequence[str], include_path: str | Path | None = None,
                   limit: int | None = None, batch_size: int = 16, *,
                   samples: bool = False) -> dict[str, dict]:
    """lm-eval metrics of the live model per task (and group): {"task": {"acc": ..., "acc_stderr": ...,
    "acc_norm": ..., "acc_norm_stderr": ..., "n": items}} as plain floats (metrics of another filter
    than "none" are keyed "metric,filter"; an undefined stderr is None). `limit`: the first `limit`
    items of each task (None = all). `samples=True` adds per item "samples": [{"doc_id", "target",
    "loglikelihoods" (one per choice, summed over the continuation's tokens)}] (multiple-choice tasks)."""
    if isinstance(tasks, str) or not tasks:
        raise TaskNotFoundError("lm_eval_scores() takes a non-empty list of lm-eval task names")
    _require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include = _include(include_path)
    local_only = check_tasks(tasks, include)
    manager = TaskManager(include_path=include, include_defaults=not local_only)
    tok = handle.tokenizer
    if getattr(tok, "pad_token_id", None) is None:              # HFLM would set (or add) one on the handle's
        tok = copy.deepcopy(tok)
    with _preserved(handle.model):
        lm = HFLM(pretrained=handle.model, tokenizer=tok, batch_size=batch_size, dtype=handle.dtype,
                  softmax_dtype=torch.float32)
        out = lm_eval.simple_evaluate(model=lm, tasks=_specs(manager, tasks), task_manager=manager,
                                      limit=limit, log_samples=samples, bootstrap_iters=1000, random_seed=0,
                                      numpy_random_seed=SEED, torch_random_seed=SEED,
                                      fewshot_random_seed=SEED)
    scores: dict[str, dict] = {}
    for name, row in out["results"].items():
        metrics = {}
        for key, v in row.items():
            metric, _, filt = key.partition(",")
            if not filt or isinstance(v, str) and v.strip() != "N/A":
                continue
            label = metric if filt == "none" else key
            metrics[label] = None if isinstance(v, str) else _plain(v)
        n = out.get("n-samples", {}).get(name, {}).get("effective")
        scores[name] = metrics | {"n": int(n) if n is not None else None}
    for name, rows in (out.get("samples") or {}).items():
        scores.setdefault(name, {})["samples"] = [
            {"doc_id": int(s["doc_id"]), "target": s["target"],
             "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]]} for s in rows]
    return scores
