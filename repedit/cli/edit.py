"""`repedit edit rocr | value-vectors | neurons | pga | mrp | sae-align` (hand-written: they show more
than the generic path) and `repedit export`. Each config field of a registered method is an option."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from repedit.cli.common import (
    console,
    export_stack,
    facts_about,
    facts_or_fail,
    ints,
    refuse_existing,
    show_and_export,
)
from repedit.cli.options import with_config
from repedit.edits.mrp import MRPConfig
from repedit.edits.rocr import ROCRConfig
from repedit.edits.sae_align import SAEAlignConfig
from repedit.errors import InputError
from repedit.methods import PGAConfig

app = typer.Typer(help="Edit the model's weights (reversible, exportable).", no_args_is_help=True)


@app.command("rocr")
@with_config(ROCRConfig)
def rocr_cmd(target: str = typer.Option(..., help="concept to redirect, e.g. France"),
             redirect_to: str = typer.Option(None, help="harmless concept it should read as (default: an invented "
                                                        "entity of the target's kind, or --redirect refusal)"),
             model: str = typer.Option("smollm2-135m"),
             suite: str = typer.Option("capitals", help="suite whose facts about the target are shown"),
             out: Path = typer.Option(None, help="export the edited model here"),
             force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
    """Rank-one concept redirection (training-free, null-space protected)."""
    from repedit import load
    from repedit.edits.rocr import ROCR
    from repedit.methods import rocr_redirects

    refuse_existing(out, force)                    # the checks that need no model come before loading it
    cfg = ROCRConfig(**overrides)
    facts = facts_about(suite, [target])
    if redirect_to is None and cfg.redirect != "refusal" and not facts:
        raise InputError(f"{target!r} is not a subject of suite {suite!r}: give --redirect-to (a harmless "
                         "concept) or --redirect refusal")
    handle = load(model)
    rocr = ROCR(handle, cfg, progress=True)
    if redirect_to is None and cfg.redirect != "refusal":
        redirect_to = rocr_redirects(facts[:1], cfg.redirect)[0]
    show_and_export(handle, rocr.edit(target, redirect_to, fact=facts[0] if facts else None), facts, out, force)


@app.command("value-vectors")
def value_vectors_cmd(layer: int = typer.Option(...), columns: str = typer.Option(..., help="e.g. 1321,697"),
                      mode: str = typer.Option("zero", help="zero | noise"), noise_std: float = typer.Option(0.1),
                      model: str = typer.Option("smollm2-135m"), suite: str = typer.Option(None),
                      subject: str = typer.Option(None, help="fact subject to show before/after"),
                      out: Path = typer.Option(None), force: bool = typer.Option(False)):
    """Zero or perturb concept-vector columns of W_out (from `repedit locate concept-vectors`)."""
    from repedit import load
    from repedit.edits.ablate import value_vector_edit

    refuse_existing(out, force)
    cols, facts = ints(columns), facts_about(suite, [subject] if subject else [])
    if mode not in ("zero", "noise"):
        raise InputError(f"--mode must be zero or noise, got {mode!r}")
    handle = load(model)
    edit = value_vector_edit(handle, layer, cols, mode=mode, noise_std=noise_std)
    show_and_export(handle, edit, facts, out, force)


@app.command("neurons")
def neurons_cmd(neurons: str = typer.Option(..., help="layer:unit pairs, e.g. 21:522,29:1285"),
                factor: float = typer.Option(0.0, help="0 suppresses, 2 amplifies"),
                model: str = typer.Option("smollm2-135m"), suite: str = typer.Option(None),
                subject: str = typer.Option(None), out: Path = typer.Option(None), force: bool = typer.Option(False)):
    """Scale knowledge neurons (from `repedit locate neurons`) as a weight edit."""
    from repedit import load
    from repedit.edits.ablate import neuron_edit

    refuse_existing(out, force)
    groups: dict[int, list[int]] = {}
    for pair in neurons.split(","):
        try:
            layer, unit = (int(x) for x in pair.split(":"))
        except ValueError:
            raise InputError(f"neurons are layer:unit pairs, got {pair!r}") from None
        groups.setdefault(layer, []).append(unit)
    facts = facts_about(suite, [subject] if subject else [])
    handle = load(model)
    edit = neuron_edit(handle, groups, factor=factor)
    show_and_export(handle, edit, facts, out, force)


def register_export(root: typer.Typer) -> None:
    @root.command("export")
    def export_cmd(source: Path = typer.Option(..., "--from", help="an earlier export whose edits to re-apply"),
                   out: Path = typer.Option(..., help="new export directory"),
                   model: str = typer.Option("smollm2-135m", help="the original model the edits were made for"),
                   force: bool = typer.Option(False)):
        """Re-apply an export's edits (edits.safetensors) to the original model and export again."""
        from repedit import load
        from repedit.edits.stack import EditStack
        from repedit.export.directory import export, load_edits

        handle = load(model)
        stack = EditStack(handle)
        for e in load_edits(source):
            stack.push(e)
        res = export(handle, out, stack, force=force)
        console.print(f"re-applied {len(stack)} edits; exported to {res.path} "
                      f"(reloaded logits differ by {res.max_logit_diff:.2g})")


@app.command("pga")
@with_config(PGAConfig)
def pga_cmd(method: str = typer.Option("pga", help="pga | md | adversarial | trained"),
            steps: int = typer.Option(40, help="trained: optimisation steps"),
            pools: str = typer.Option("natural"), contexts: int = typer.Option(8, help="neutral contexts (max 24)"),
            model: str = typer.Option("smollm2-135m"),
            out: Path = typer.Option(None, help="export the folded weight form here"),
            force: bool = typer.Option(False), overrides: dict = None):
    """Probe-geometry alignment. pga/md/adversarial: closed-form projection, hook form measured, folded
    weight form exported with --out. trained: a rank-one delta per layer trained against the live probe.
    --depth: the signature's peak (0 = embeddings; default: the model's preset)."""
    from repedit import load
    from repedit.edits.fold import fold_projection, untie_embeddings
    from repedit.edits.pga import adversarial_pga, pga
    from repedit.edits.stack import EditStack
    from repedit.fit.pool_features import CONTEXTS, pool_features
    from repedit.fit.pool_screen import screened
    from repedit.models.presets import resolve_config
    from repedit.suites.pools import load_pool
    from repedit.verify.signature import depth_curve

    if method not in ("pga", "md", "adversarial", "trained"):
        raise InputError(f"--method must be pga, md, adversarial or trained, got {method!r}")
    refuse_existing(out, force)
    cfg = PGAConfig(**overrides)
    candidates = load_pool(pools)                  # before the model: a bad --pools costs no load
    handle = load(model)
    cfg = resolve_config(cfg, handle)
    depth = cfg.depth
    pool, _ = screened(handle, candidates)
    ctx = CONTEXTS[:contexts]
    feats = pool_features(handle, pool, contexts=ctx, depths=[depth], progress=False)

    def loo(**kw) -> float:
        feats_now = pool_features(handle, pool, contexts=ctx, depths=[depth], progress=False, **kw)
        return depth_curve(feats_now)[0].true_loo[0]

    if method == "trained":
        from repedit.edits.pga_trained import TrainedPGAConfig, trained_pga

        edit = trained_pga(handle, pool, TrainedPGAConfig(depth=depth, steps=steps, n_contexts=contexts))
        stack = EditStack(handle)
        stack.push(edit)
        console.print(f"True-LOO at depth {depth}: before {depth_curve(feats)[0].true_loo[0]:.3f}, "
                      f"after the trained delta (rank {edit.rank}) {loo():.3f}")
        export_stack(handle, stack, out, force)
        return
    proj = (adversarial_pga(handle, pool, depth=depth, contexts=ctx, stop_below=cfg.stop_below,
                            max_rounds=cfg.max_rounds) if method == "adversarial"
            else pga(feats, depth=depth, k=cfg.k, method=method))
    console.print(f"True-LOO at depth {depth}: before {depth_curve(feats)[0].true_loo[0]:.3f}, "
                  f"hook ({proj.method}, k={proj.k}) {loo(writes=proj.writes()):.3f}")
    untie_embeddings(handle)
    stack = EditStack(handle)
    stack.push(fold_projection(handle, proj))
    console.print(f"folded weight form: {loo():.3f}")
    export_stack(handle, stack, out, force)


@app.command("mrp")
@with_config(MRPConfig)
def mrp_cmd(forget: str = typer.Option(..., help="comma-separated subjects per task, tasks separated by ';', "
                                                  "e.g. 'France,Japan;Egypt,Peru'"),
            retain: str = typer.Option(..., help="comma-separated subjects to keep"),
            suite: str = typer.Option("capitals"), model: str = typer.Option("smollm2-135m"),
            out: Path = typer.Option(None, help="export the weight form here"),
            force: bool = typer.Option(False), overrides: dict = None):
    """Continual MRP: one task per ';' group; measured after each task, weight form exported with --out.
    --where: writers (trained as exported) | residual (the source's hook)."""
    from repedit import load
    from repedit.edits.fold import untie_embeddings
    from repedit.edits.mrp import MRP
    from repedit.edits.stack import EditStack
    from repedit.forward.answer_scores import answer_logprobs

    refuse_existing(out, force)
    cfg = MRPConfig(**overrides)
    tasks = [facts_or_fail(suite, [s.strip() for s in group.split(",") if s.strip()]) for group in forget.split(";")]
    keep = facts_or_fail(suite, [s.strip() for s in retain.split(",") if s.strip()])
    handle = load(model)
    untie_embeddings(handle)
    mrp = MRP(handle, cfg)
    measure_forms = ("blank", "qa", "paraphrase", "adversarial")

    def probs() -> str:
        return "  ".join(f"{float(answer_logprobs(handle, f, measure_forms).exp().mean()):.3f}" for f in tasks + [keep])

    table = Table(title="answer probability (mean of blank, qa, paraphrase, adversarial)")
    for col in ["after", *[f"task {i}" for i in range(len(tasks))], "retain"]:
        table.add_column(col)
    table.add_row("before", *probs().split())
    for i, task in enumerate(tasks):
        mrp.task(task, keep)
        with mrp.active():
            table.add_row(f"task {i} ({cfg.where})", *probs().split())
    stack = EditStack(handle)
    stack.push(mrp.edit())
    table.add_row("weight form", *probs().split())
    console.print(table)
    export_stack(handle, stack, out, force)


@app.command("sae-align")
@with_config(SAEAlignConfig)
def sae_align_cmd(target: str = typer.Option(..., help="known entity to make read as unknown, e.g. France"),
                  known_suite: str = typer.Option("capitals", help="suite of known entities (holds the target's fact)"),
                  sae: Path = typer.Option(None, help="SAE directory (sae-lens format); default: the model's preset"),
                  model: str = typer.Option("smollm2-135m"),
                  out: Path = typer.Option(None, help="export the edited model here"),
                  force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
    """SAE unknown-alignment: a trained low-rank down_proj edit after which the target's SAE code reads unknown."""
    from repedit import load
    from repedit.edits.sae_align import sae_align
    from repedit.errors import close_matches
    from repedit.fit.saes import load_sae
    from repedit.suites import load_suite
    from repedit.suites.references import frames, reference_sets
    from repedit.verify.sae_codes import fit_knownness

    refuse_existing(out, force)
    facts = load_suite(known_suite)
    by_subject = {f.subject: f for f in facts}
    if target not in by_subject:
        raise InputError(f"{target!r} is not a subject of suite {known_suite!r} "
                         f"(close: {close_matches(target, by_subject)}); pick one of its subjects")
    cfg = SAEAlignConfig(**overrides)
    from repedit.models.presets import preset_for

    handle = load(model)
    sae_model = load_sae(sae or preset_for(handle).sae_path(), handle=handle)
    others = [f for f in facts if f.subject != target]
    fact = by_subject[target]               # unknowns of its kind: train half the edit's, measure half the classifier's
    refs = reference_sets(fact.kind, n_train=cfg.n_reference)
    clf = fit_knownness(handle, sae_model, [f.subject for f in others[:40]], refs.measure,
                        frames=frames(fact.kind).measure)
    p0 = float(clf.p_known(handle, sae_model, [target])[0])
    edit = sae_align(handle, sae_model, fact, [f.subject for f in others], refs.train, retain=others, config=cfg,
                     progress=True)
    show_and_export(handle, edit, [by_subject[target]] + others[:5], out, force)
    p1 = float(clf.p_known(handle, sae_model, [target])[0])
    console.print(f"P(known) of {target} by a classifier on SAE codes (CV accuracy {clf.cv_accuracy:.2f}): "
                  f"{p0:.3f} -> {p1:.3f}")
