"""Run a validated recipe: load → resolve targets → measure → for each edit: build, push, measure,
attack, (export), revert → report. Writes a run directory:

    recipe.toml        the recipe as given          resolved.json  config with every default filled
    journal.jsonl      one line per stage (time)    report.json    every number
    report.html        readable report with plots   export/        the exported model (if asked)
    state/             every finished stage's results (JSON), for `resume` (see run_state)
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repedit.edits.base import PrecisionError
from repedit.edits.stack import EditStack
from repedit.errors import InputError
from repedit.formats import stamped
from repedit.methods import METHODS, Context, method_config
from repedit.models.presets import resolve_config
from repedit.recipes.measure import (
    Resolved,
    forget_level,
    measure_facts,
    measure_pool,
    neighbour_forms,
    peak_index,
    resolve,
)
from repedit.recipes.recovery_attacks import comparison_columns
from repedit.recipes.run_state import Journal, RunState, plain, recipe_of
from repedit.recipes.schema import Recipe, load_recipe


@dataclass(frozen=True)
class RunResult:
    dir: Path
    report: dict


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _attacks(handle, recipe: Recipe, res: Resolved, orig: dict, stack: EditStack) -> dict:
    """Attacks on the edited model (pushed on `stack`); `orig` holds what was recorded on the original model."""
    from repedit.recipes.recovery_attacks import run_on_edited

    a, out = recipe.attacks, {}
    if res.forget and a.prefixes:
        from repedit.verify.prompt_attacks import prefix_attack

        out["prefixes"] = prefix_attack(handle, res.forget, res.retain).to_dict()
    if res.forget and a.sae:
        from repedit.verify.prompt_attacks import sae_restoration

        out["sae_restoration"] = sae_restoration(handle, orig["sae"], res.forget, orig["sae_codes"])
    if a.trace_prompts:
        from repedit.verify.prompt_attacks import trace_detection, trace_features

        edited, _ = trace_features(handle, res.trace_prompts, orig["trace_vocab"])
        out["trace_accuracy"] = trace_detection(orig["trace"], edited)
    if res.forget and a.relearn_steps:
        from repedit.verify.relearn import relearn

        train, held = res.forget[::2], res.forget[1::2]
        curve = relearn(handle, train, held, steps=a.relearn_steps, lr=a.relearn_lr, every=a.relearn_every)
        out["relearn"] = curve.to_json()
    return out | run_on_edited(handle, recipe, res, orig, stack)


def _original_records(handle, recipe: Recipe, res: Resolved, before: dict) -> dict:
    a, orig = recipe.attacks, {}
    if res.forget and a.sae:
        from repedit.fit.saes import load_sae
        from repedit.verify.prompt_attacks import restoration_rows, sae_codes_at

        orig["sae"] = load_sae(a.sae, handle=handle)          # refuses an SAE of another model or width
        orig["sae_codes"] = sae_codes_at(handle, orig["sae"], restoration_rows(handle, res.forget))
    if a.trace_prompts:
        from repedit.verify.prompt_attacks import trace_features

        orig["trace"], orig["trace_vocab"] = trace_features(handle, res.trace_prompts)
    if res.forget and a.prefixes:
        from repedit.verify.prompt_attacks import prefix_attack

        before["prefixes"] = prefix_attack(handle, res.forget, res.retain).to_dict()
    from repedit.recipes.recovery_attacks import record_original

    record_original(handle, recipe, res, before, orig)
    return orig


def _monitor(handle, res: Resolved, recipe: Recipe):
    """The run's forget measure (and the neighbours'), cheap enough to track a training baseline."""
    if not res.forget:
        return None
    from repedit.verify.recall import recall_probabilities

    sets = [(res.forget, recipe.verify.forms)] + ([(res.neighbours, neighbour_forms(recipe))] if res.neighbours else [])

    def monitor() -> dict:                   # both sets scored in one batched pass
        return dict(zip(("forget", "neighbours"), recall_probabilities(handle, sets)))
    return monitor


def _level_match(row: dict, rows: list[dict], edits: dict) -> None:
    """The fastest baseline reaching at least `row`'s forget level: its seconds to that level (from its
    tracked trajectory when it trained, else its whole build), and its neighbours there."""
    from repedit.baselines.tracking import seconds_to_level

    best = None
    for other in rows:
        if other["family"] != "baseline" or other is row:
            continue
        traj = edits[other["edit"]].get("trajectory")
        if traj:
            t = seconds_to_level(traj, row["forget_after"])
            neigh = next((r.get("neighbours") for r in traj if r["forget"] <= row["forget_after"]), None)
        else:
            t = other["seconds"] if other["forget_after"] <= row["forget_after"] else None
            neigh = other.get("neighbours_after")
        if t is not None and (best is None or t < best[1]):
            best = (other["edit"], t, neigh)
    row["time_ratio_to_baseline"] = row["seconds"] / max(best[1], 1e-3) if best else None
    if best:
        row["matched_baseline"], row["matched_baseline_seconds"], row["matched_baseline_neighbours"] = best


def _comparison(before: dict, edits: dict) -> list[dict]:
    """One row per edit; the time ratio is to the fastest baseline reaching at least the same forget level."""
    rows = []
    peak = peak_index(before) if before.get("forget") is None else None
    for name, e in edits.items():
        after = e["after"]
        row = {"edit": name, "method": e["method"], "family": e["family"], "forget_before": forget_level(before, peak),
               "forget_after": forget_level(after, peak), "seconds": e["seconds"], "rank": e["rank"]}
        if peak is not None:
            row["peak_depth"] = before["depths"][peak]
            row["max_loo_over_depths_after"] = float(max(after["true_loo"]))
        if after.get("neighbours"):
            row["neighbours_before"] = before["neighbours"]["mean_probability"]
            row["neighbours_after"] = after["neighbours"]["mean_probability"]
        if after.get("unrelated"):
            row["unrelated_after"] = after["unrelated"]["mean_probability"]
        if after.get("knownness"):
            row["p_known_before"] = before["knownness"]["refit"]
            row["p_known_fixed_after"] = after["knownness"]["fixed"]
            row["p_known_refit_after"] = after["knownness"]["refit"]
        row["perplexity_before"], row["perplexity_after"] = before.get("perplexity"), after.get("perplexity")
        for task, m in (after.get("lm_eval") or {}).items():        # capability: acc per lm-eval task
            row[f"lm_eval_{task}_acc_before"] = (before.get("lm_eval") or {}).get(task, {}).get("acc")
            row[f"lm_eval_{task}_acc_after"] = m.get("acc")
        if after.get("benchmark"):                                    # the benchmark's own headline numbers
            from repedit.verify.benchmarks import headline

            first = headline(before.get("benchmark"))
            for k, v in headline(after["benchmark"]).items():
                row[f"benchmark_{k}_before"], row[f"benchmark_{k}_after"] = first.get(k), v
        if "memorised_logprob" in after:
            row["memorised_logprob_before"] = before["memorised_logprob"]
            row["memorised_logprob_after"] = after["memorised_logprob"]
        if "refit" in after:
            row["refit_after"] = after["refit"]["accuracy"][0][peak if peak is not None else 0]
        att = e.get("attacks", {})
        if "relearn" in att:
            base = before["forget"]["mean_probability"] or 1e-9
            row["relearn_held_out"] = att["relearn"]["held_out"][-1]
            row["relearn_recovery"] = att["relearn"]["held_out"][-1] / base
        if "prefixes" in att:
            row["prefix_best_of"] = att["prefixes"]["best-of"]["probability"]
        if "sae_restoration" in att:
            row["sae_restored"] = att["sae_restoration"]["restored"]
        if "trace_accuracy" in att:
            row["trace_accuracy"] = att["trace_accuracy"]
        comparison_columns(row, before, att)
        rows.append(row)
    for row in rows:
        _level_match(row, rows, edits)
    return rows


def _load(recipe: Recipe, journal: Journal):
    """The model, untied when an edit folds a projection into the embedding (redone on every (re)start)."""
    from repedit.models import load

    handle = load(recipe.model, dtype=getattr(torch, recipe.dtype), device_map=recipe.device_map)
    journal.log("load", model=handle.id, dtype=recipe.dtype,
                device_map=getattr(handle.model, "hf_device_map", None) or str(handle.device))
    if any(METHODS[e.method].needs_untied for e in recipe.edits):
        from repedit.edits.fold import untie_embeddings

        journal.log("untie", tied=untie_embeddings(handle))
    return handle


def _restore_originals(handle, recipe: Recipe, res: Resolved, before: dict, kept: dict, journal: Journal) -> dict:
    """On resume, what the remaining edits need from the original (unedited) model and JSON cannot hold,
    recomputed deterministically: the knownness probe the before-measure fitted (`res.knownness`), the
    benchmark's original answers (`res.benchmark_state`), the SAE and its codes, the trace features. The
    saved before-measure is kept as it was; whether a recomputation agrees with it is journalled."""
    from repedit.recipes.measure import benchmark_measure, knownness

    if res.forget and res.unknown:
        again = plain(knownness(handle, res, recipe))
        journal.log("recomputed", what="knownness", matches_before=again == before.get("knownness"))
    if res.forget and res.benchmark is not None:
        again = plain(benchmark_measure(handle, res, recipe))
        journal.log("recomputed", what="benchmark_state", matches_before=again == before.get("benchmark"))
    lite = dataclasses.replace(recipe.attacks, prefixes=False, quantisation=(), extraction=False, membership=False,
                               remind=False)            # their before numbers and records are saved
    orig = _original_records(handle, dataclasses.replace(recipe, attacks=lite), res, {}) | kept
    journal.log("recomputed", what="original records", keys=sorted(orig))
    return orig


def _run_edit(handle, recipe: Recipe, spec, ctx: Context, res: Resolved, orig: dict, measure, peak,
              journal: Journal, run_dir: Path) -> tuple[bool, dict]:
    """Build, push, measure, attack, (export) and revert one [[edit]]: (refused, its report entry)."""
    method = METHODS[spec.method]
    _seed(recipe.seed)
    t0 = time.perf_counter()
    config = resolve_config(method_config(spec.method, spec.config), handle)   # None: the model's preset
    built = method.build(ctx, config)
    seconds = time.perf_counter() - t0 - sum(e.stats.get("monitor_seconds", 0.0) for e in built)
    journal.log("edit", name=spec.name, method=spec.method, seconds=round(seconds, 2), edits=len(built))
    stack = EditStack(handle)
    try:
        try:
            for e in built:
                stack.push(e)
        except PrecisionError as exc:          # this dtype cannot hold the edit: record it, run the rest
            journal.log("refused", name=spec.name, method=spec.method, error=str(exc))
            return True, {"method": spec.method, "family": method.family, "error": str(exc),
                          "seconds": round(seconds, 2)}
        after = measure(handle, res, recipe)
        journal.log("measure", what=spec.name, forget=round(forget_level(after, peak), 4))
        _seed(recipe.seed)
        attacks = _attacks(handle, recipe, res, orig, stack)
        journal.log("attacks", what=spec.name, ran=sorted(attacks))
        if recipe.export == spec.name:
            from repedit.export.directory import export

            ex = export(handle, run_dir / "export", stack, force=True)
            journal.log("export", path=str(run_dir / "export"), max_logit_diff=ex.max_logit_diff)
    finally:
        stack.revert_all()
    return False, {"method": spec.method, "family": method.family, "source": method.source,
                   "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
                   "seconds": round(seconds, 2), "rank": {p: r for e in built for p, r in e.rank.items()},
                   "stats": [e.stats for e in built], "after": after, "attacks": attacks,
                   "trajectory": built[0].stats.get("trajectory") if len(built) == 1 else None}


def _open_run(recipe: Recipe, run_dir: Path, force: bool, resume: bool, command: str) -> RunState:
    if resume:
        if force:
            raise InputError("resume finishes the run in its directory and force starts it over: pass one of them")
        return RunState.open(run_dir, recipe)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise InputError(f"{run_dir} exists and is not empty; pass force=True (--force) or another out, or "
                             f"resume=True (--resume {run_dir}) to finish a killed run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunState.start(run_dir, recipe, command)


def run_recipe(recipe: Recipe | str | Path, out: str | Path | None = None, *, force: bool = False,
               progress: bool = True, echo=print, command: str | None = None, resume: bool = False) -> RunResult:
    """Run `recipe` (a Recipe or a path) and write its run directory (default runs/<name>); `command`:
    what reproduces the run, for the report (default: `repedit run <the recipe file>`; a resumed run keeps the
    one it was started with). `resume`: finish the run in `out` from its saved stages (state/), recomputing
    none of them; the report equals an uninterrupted run's but for timing fields (`run_state.is_timing`)."""
    from repedit.version import __version__

    recipe = load_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    run_dir = Path(out) if out is not None else Path("runs") / recipe.name
    source = recipe.source and Path(recipe.source).exists()
    state = _open_run(recipe, run_dir, force, resume, command or (f"repedit run {recipe.source}" if source
                                                                  else f"repedit run {run_dir / 'recipe.toml'}"))
    if source and not (resume and (run_dir / "recipe.toml").exists()):
        shutil.copy(recipe.source, run_dir / "recipe.toml")
    journal = Journal(run_dir / "journal.jsonl", echo, append=resume)
    if resume:
        journal.log("resume", saved=state.saved())
    _seed(recipe.seed)
    t_all = time.perf_counter()
    todo = [i for i in range(len(recipe.edits)) if state.edit(i) is None]
    saved_before = state.before()
    handle = _load(recipe, journal) if todo or saved_before is None else None
    res = state.targets(recipe)
    if res is not None:
        journal.log("restored", what="targets")
    else:
        res = state.save_targets(resolve(handle, recipe), recipe)
        journal.log("targets", **{k: len(v) for k, v in res.to_dict().items() if isinstance(v, list)})
    measure = measure_facts if res.forget else measure_pool
    if saved_before is not None:
        before, kept = saved_before
        journal.log("restored", what="before")
        orig = _restore_originals(handle, recipe, res, before, kept, journal) if todo else {}
    else:
        before = measure(handle, res, recipe)
        orig = _original_records(handle, recipe, res, before)
        before, kept = state.save_before(before, orig)
        orig |= kept                                     # as a resumed run reads them back
    peak = None if res.forget else peak_index(before)
    if saved_before is None:
        journal.log("measure", what="before", forget=round(forget_level(before, peak), 4))
    ctx = Context(handle, res.forget, res.retain, res.known, res.pool, recipe.targets.contexts,
                  recipe.attacks.sae, progress, monitor=_monitor(handle, res, recipe),
                  references=tuple(getattr(recipe.targets, "references", ())))
    edits, refused = {}, {}
    for i, spec in enumerate(recipe.edits):
        done = state.edit(i)
        if done is not None:
            journal.log("restored", what=spec.name)
            was_refused, entry = done["refused"], done["entry"]
        else:
            was_refused, entry = _run_edit(handle, recipe, spec, ctx, res, orig, measure, peak, journal, run_dir)
            entry = state.save_edit(i, spec.name, entry, refused=was_refused)
        (refused if was_refused else edits)[spec.name] = entry
    report = stamped("report", {
        "recipe": recipe.to_dict(), "targets": res.to_dict(), "before": before, "edits": edits, "refused": refused,
        "comparison": _comparison(before, edits),
        "environment": {"repedit": __version__, "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
        "command": state.command, "wall_seconds": round(time.perf_counter() - t_all, 1)})
    resolved = {"recipe": recipe.to_dict(), "targets": res.to_dict(),
                "edits": {k: v["config"] for k, v in edits.items()}}
    (run_dir / "resolved.json").write_text(json.dumps(stamped("resolved", resolved), indent=1, default=str))
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    if recipe.export:                                   # the certificate travels with the exported weights
        from repedit.export.certificate import certify_run

        cert = certify_run(run_dir, report, facts={"forget": res.forget, "neighbours": res.neighbours})
        if cert:
            journal.log("certificate", path=str(cert.verification), seconds=cert.seconds)
    from repedit.recipes.report import write_html

    write_html(report, run_dir)
    journal.log("report", path=str(run_dir / "report.html"), wall_seconds=report["wall_seconds"])
    return RunResult(run_dir, report)


def resume_run(run_dir: str | Path, **kw) -> RunResult:
    """Finish a killed run (`run_recipe(..., resume=True)` with the recipe it was started with)."""
    return run_recipe(recipe_of(Path(run_dir)), run_dir, resume=True, **kw)
