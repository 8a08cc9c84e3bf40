"""`repedit run recipe.toml` and `repedit compare` (repedit's methods and the baselines on the same
targets, one table)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from repedit.cli.common import check_subjects, make_console, styled
from repedit.recipes.compare import FACT_METHODS, RECOVERY, compare_recipe
from repedit.verify.quantised_weights import DEFAULT_SCHEMES

console = make_console(width=160) if not Console().is_terminal else make_console()   # no markup: see common

SHOWN = [("edit", "edit"), ("family", "family"), ("forget_after", "forget"), ("neighbours_after", "neighbours"),
         ("perplexity_after", "ppl"), ("p_known_refit_after", "LOO P(known)"),
         ("memorised_logprob_after", "M logp"), ("refit_after", "re-fit"),
         ("prefix_best_of", "prefix"), ("relearn_held_out", "relearned"),
         ("trace_accuracy", "trace"), ("weight_diff_named", "wdiff named"), ("weight_diff_key_rank", "wdiff key"),
         ("extraction_tuned_recovered", "lens rec."), ("mia_min_k_pp_auc_after", "MIA"),
         ("remind_auc_after", "REMIND"), ("seconds", "s"), ("time_ratio_to_baseline", "÷ baseline")]


def recovery_choice(recovery: str, schemes: str) -> dict:
    """--recovery / --quant-schemes as the [attacks] settings they turn on."""
    names = [r.strip().replace("-", "_") for r in recovery.split(",") if r.strip()]
    names = list(RECOVERY) if names == ["all"] else names
    bad = [n for n in names if n not in RECOVERY]
    if bad:
        raise typer.BadParameter(f"unknown recovery attacks {bad}; choose from {list(RECOVERY)} or 'all'")
    out: dict = {n: True for n in names}
    if "quantisation" in out:
        out["quantisation"] = [s.strip() for s in schemes.split(",") if s.strip()]
    return out


def print_comparison(report: dict) -> None:
    """The comparison table, the refused edits and the level-matched table of a run's report."""
    rows = report["comparison"]
    table = Table(title=f"{report['recipe']['name']}: forget before {rows[0]['forget_before']:.4f}" if rows else "")
    cols = [(k, label) for k, label in SHOWN if any(r.get(k) is not None for r in rows)]
    quant = dict.fromkeys(k for r in rows for k in r if k.startswith("quant_") and k.endswith("_recovered"))
    cols += [(k, k.removeprefix("quant_").removesuffix("_recovered") + " rec.") for k in quant]   # per scheme
    lm = dict.fromkeys(k for r in rows for k in r if k.startswith("lm_eval_") and k.endswith("_acc_after"))
    cols += [(k, k.removeprefix("lm_eval_").removesuffix("_after")) for k in lm]     # lm-eval acc per task
    bench = dict.fromkeys(k for r in rows for k in r if k.startswith("benchmark_") and k.endswith("_after"))
    cols += [(k, k.removeprefix("benchmark_").removesuffix("_after")) for k in bench]   # the benchmark's own
    for _, label in cols:
        table.add_column(label)
    for r in rows:
        table.add_row(*[(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "—"))) for k, _ in cols])
    console.print(table)
    for name, r in report.get("refused", {}).items():
        console.print(styled(f"{name} ({r['method']}) refused:", "yellow", f" {r['error']}"))
    matched = [r for r in rows if r["family"] == "repedit"]
    if matched and any(r["family"] == "baseline" for r in rows):
        t = Table(title="level-matched: the fastest baseline reaching each repedit edit's forget level")
        for label in ("edit", "forget", "neighbours", "s", "baseline", "its s to that level", "its neighbours there",
                      "÷ baseline"):
            t.add_column(label)
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("—" if v is None else str(v))   # noqa: E731
        for r in matched:
            t.add_row(*[fmt(r.get(k)) for k in ("edit", "forget_after", "neighbours_after", "seconds",
                                                 "matched_baseline", "matched_baseline_seconds",
                                                 "matched_baseline_neighbours", "time_ratio_to_baseline")])
        console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(recipe: Path = typer.Argument(None, help="TOML recipe (see recipes/); with --resume: default the "
                                              "one the run was started with"),
                out: Path = typer.Option(None, help="run directory (default runs/<name>)"),
                force: bool = typer.Option(False, help="replace an existing run directory"),
                check: bool = typer.Option(False, help="validate the recipe and stop (no compute)"),
                resume: Path = typer.Option(None, help="finish the killed run in this directory: its saved stages "
                                            "are not recomputed")):
        """Run a recipe: locate/edit, verify, attack, report (report.html) and export."""
        from repedit.errors import InputError
        from repedit.recipes.runner import resume_run, run_recipe
        from repedit.recipes.schema import load_recipe

        if recipe is None and resume is None:
            raise InputError("give a RECIPE (or --resume DIR to finish a killed run)")
        if resume is not None and out is not None and out.resolve() != resume.resolve():
            raise InputError("--resume DIR is the run directory: drop --out")
        parsed = load_recipe(recipe) if recipe is not None else None
        if check:
            if parsed is None:
                raise InputError("--check validates a RECIPE: give one")
            console.print(f"{recipe}: valid ({len(parsed.edits)} edits: {', '.join(e.name for e in parsed.edits)})")
            return
        if resume is not None and parsed is None:
            result = resume_run(resume, echo=console.print, force=force)
        else:
            result = run_recipe(parsed, resume or out, force=force, echo=console.print, resume=resume is not None)
        print_comparison(result.report)
        console.print(f"report: {result.dir / 'report.html'}")

    @app.command("compare")
    def compare_cmd(forget: str = typer.Option("", help="comma-separated subjects of the suite (or of the "
                                               "benchmark; with --benchmark, default: its whole forget split)"),
                    suite: str = typer.Option("capitals", help="fact suite: a built-in name or a .jsonl/.csv path"),
                    methods: str = typer.Option(",".join(FACT_METHODS), help="comma-separated methods"),
                    relearn_steps: int = typer.Option(10, help="relearning attack steps (0 = off)"),
                    trace_prompts: int = typer.Option(40, help="prompts for trace detection (0 = off)"),
                    sae: str = typer.Option(None, help="SAE directory for the SAE restoration attack"),
                    quick: bool = typer.Option(False, help="small step counts (minutes, for a first look)"),
                    seed: int = typer.Option(0), out: Path = typer.Option(None, help="run directory"),
                    model: str = typer.Option("smollm2-135m", help="model id (its preset supplies the layers)"),
                    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
                    lm_eval_tasks: str = typer.Option(None, help="comma-separated lm-eval tasks scored "
                                                      "before and after each edit (needs the eval extra)"),
                    lm_eval_include: Path = typer.Option(None, help="folder of local lm-eval task YAMLs"),
                    lm_eval_limit: int = typer.Option(0, help="items per lm-eval task (0 = all)"),
                    benchmark: str = typer.Option(None, help="FORMAT:PATH, a standard benchmark file as the "
                                                  "targets (tofu, muse, wmdp, counterfact, zsre)"),
                    benchmark_split: str = typer.Option("", help="the benchmark's split (TOFU: forget01/05/10)"),
                    recovery: str = typer.Option("", help="recovery attacks: comma-separated of quantisation, "
                                                 "weight-diff, extraction, membership, remind, or 'all'"),
                    quant_schemes: str = typer.Option(",".join(DEFAULT_SCHEMES),
                                                      help="schemes of the quantisation attack"),
                    force: bool = typer.Option(False, help="replace an existing run directory")):
        """repedit's methods and the baselines on the same targets: one table (and a full run directory)."""
        import tempfile

        from repedit.errors import ConfigError, InputError, close_matches
        from repedit.methods import METHODS
        from repedit.recipes.runner import run_recipe
        from repedit.recipes.schema import DTYPES, load_recipe, parse_recipe

        subjects = [s.strip() for s in forget.split(",") if s.strip()]
        names = [m.strip() for m in methods.split(",") if m.strip()]
        for m in names or [methods]:                  # named as the option, before any recipe text is built
            if m not in METHODS:
                raise ConfigError(f"--methods: unknown method {m!r}; valid: {sorted(METHODS)} "
                                  f"(close: {close_matches(m, METHODS, 2)})")
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if any(c in '"\\' or ord(c) < 32 or ord(c) == 127 for c in model):   # no model id holds these
            raise InputError(f"--model {model!r} is no model id or path a recipe can name: drop its quotes, "
                             "backslashes and control characters")
        tasks = [t.strip() for t in (lm_eval_tasks or "").split(",") if t.strip()]
        include = str(lm_eval_include.expanduser().resolve()) if lm_eval_include else None
        bench = None
        if benchmark:
            fmt, _, where = benchmark.partition(":")
            if not where:
                raise typer.BadParameter("--benchmark takes FORMAT:PATH, e.g. counterfact:data/counterfact.json")
            bench = {"format": fmt, "path": str(Path(where).expanduser().resolve()), "split": benchmark_split}
        elif not subjects:
            raise typer.BadParameter("give --forget SUBJECTS (or --benchmark FORMAT:PATH)")
        else:
            check_subjects(suite, subjects)           # named as given, before any model is loaded
        chosen = recovery_choice(recovery, quant_schemes)
        text = compare_recipe(subjects, names, name="compare", relearn_steps=relearn_steps,
                              trace_prompts=trace_prompts, sae=sae, quick=quick, seed=seed, model=model,
                              dtype=dtype, suite=suite, lm_eval_tasks=tasks, lm_eval_include=include,
                              lm_eval_limit=lm_eval_limit, benchmark=bench, recovery=chosen)
        run_dir = out or Path("runs") / "compare"
        parse_recipe(text, "<compare>")                   # validate before writing anything
        source = Path(tempfile.mkdtemp(prefix="repedit-compare-")) / "compare.toml"
        source.write_text(text)
        recipe = load_recipe(source)                      # copied into the run at its start: --resume finds it
        command = (f"repedit compare --suite {suite} --forget {','.join(subjects)} --methods {','.join(names)} "
                   f"--relearn-steps "
                   f"{relearn_steps} --trace-prompts {trace_prompts}" + (f" --sae {sae}" if sae else "")
                   + (" --quick" if quick else "") + f" --seed {seed} --model {model} --dtype {dtype}"
                   + (f" --lm-eval-tasks {','.join(tasks)} --lm-eval-limit {lm_eval_limit}" if tasks else "")
                   + (f" --lm-eval-include {include}" if tasks and include else "")
                   + (f" --benchmark {benchmark}" + (f" --benchmark-split {benchmark_split}" if benchmark_split else "")
                      if benchmark else "")
                   + (f" --recovery {recovery}" if recovery else "")
                   + (f" --quant-schemes {quant_schemes}" if "quantisation" in chosen else "")
                   + f"   # or: repedit run {run_dir}/recipe.toml")
        result = run_recipe(recipe, run_dir, force=force, echo=console.print, command=command)
        print_comparison(result.report)
        console.print(f"report: {result.dir / 'report.html'}; rerun: repedit run {result.dir / 'recipe.toml'} --force")
