"""What a run measures, before and after each edit: targets resolved once, then the same
verification and attacks for every method (facts: recall in forms, neighbours, unrelated,
perplexity, prefixes, SAE restoration, trace detection, relearning; pools: per-depth LOO probe,
probe variants and the re-fit attacker, perplexity, memorised-text log-prob)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repedit.recipes.schema import Recipe
from repedit.suites import load_suite, load_text, suite_facts


@dataclass
class Resolved:
    """The run's targets, resolved on the model (known facts filtered)."""

    forget: list = field(default_factory=list)
    retain: list = field(default_factory=list)
    neighbours: list = field(default_factory=list)
    unrelated: list = field(default_factory=list)
    known: list[str] = field(default_factory=list)       # every known subject except the forget ones
    pool: Any = None
    texts: list[str] = field(default_factory=list)        # perplexity documents
    trace_prompts: list[str] = field(default_factory=list)
    not_known: list[str] = field(default_factory=list)    # forget subjects the model did not answer
    unknown: list[str] = field(default_factory=list)      # invented entities (knownness probe negatives)
    unknown_refs: Any = None                              # their KnownnessReferences (kind, frames, names)
    knownness: Any = None                                 # the probe fitted on the original model (first measure)
    benchmark: Any = None                                 # a standard benchmark as the targets (suites.formats)
    benchmark_reference: dict | None = None               # the retain model's numbers for it (if given)
    benchmark_state: dict = field(default_factory=dict)   # the original model's answers its metrics compare with

    def to_dict(self) -> dict:
        ids = lambda fs: [f.subject for f in fs]    # noqa: E731
        return {"forget": ids(self.forget), "retain": ids(self.retain), "neighbours": ids(self.neighbours),
                "unrelated": ids(self.unrelated), "pool": None if self.pool is None else self.pool.name,
                "pool_keys": None if self.pool is None else [k.key for k in self.pool.keys],
                "perplexity_docs": len(self.texts), "trace_prompts": len(self.trace_prompts),
                "forget_not_known_before": self.not_known,
                "benchmark": None if self.benchmark is None else self.benchmark.to_dict()}


def resolve(handle, recipe: Recipe) -> Resolved:
    from repedit.verify.recall import known_facts

    t, out = recipe.targets, Resolved()
    out.texts = load_text("news", "heldout")[: recipe.verify.perplexity_docs]
    if recipe.attacks.trace_prompts:
        docs = load_text("wiki", "heldout")
        prompts = [" ".join(d.split()[:12]) for d in docs if len(d.split()) >= 12]
        out.trace_prompts = prompts[: recipe.attacks.trace_prompts]
    if t.pool or t.pool_keys:                             # a name, a path, or inline [[targets.pool_keys]]
        from repedit.fit.pool_screen import screened
        from repedit.suites.pools import load_pool, pool_from_records

        out.pool, _ = screened(handle, load_pool(t.pool) if t.pool else pool_from_records(t.pool_keys))
    if t.benchmark:
        return _resolve_benchmark(handle, recipe, out)
    if not t.forget:
        return out
    facts = suite_facts(t.suite, t.facts, t.templates)    # a built-in name, a path, or inline [[targets.facts]]
    by = {f.subject: f for f in facts}
    known = known_facts(handle, facts) if t.known_only else facts
    known_subjects = {f.subject for f in known}
    out.forget = [by[s] for s in t.forget]
    out.not_known = [s for s in t.forget if s not in known_subjects]
    pool = [f for f in known if f.subject not in set(t.forget)]
    if isinstance(t.retain, tuple):
        out.retain = [by[s] for s in t.retain]
        rest = [f for f in pool if f.subject not in set(t.retain)]
    else:
        out.retain, rest = pool[: t.retain], pool[t.retain:]
    out.neighbours = rest[: t.neighbours]
    out.known = [f.subject for f in pool]
    return _side_targets(handle, recipe, out)


def _side_targets(handle, recipe: Recipe, out: Resolved) -> Resolved:
    """Unrelated facts and the knownness probe's references, once forget is known."""
    from repedit.verify.recall import known_facts

    t = recipe.targets
    if t.unrelated:                                       # (greedy recall of a whole suite: skipped when unused)
        unrelated = load_suite(t.unrelated_suite, templates=t.templates)
        out.unrelated = (known_facts(handle, unrelated) if t.known_only else unrelated)[: t.unrelated]
    if recipe.verify.knownness:                           # the forget facts' kind; never SAE-align's references
        out.unknown_refs = knownness_references(out.forget, getattr(t, "references", ()))
        out.unknown = list(out.unknown_refs.names)
    return out


def _resolve_benchmark(handle, recipe: Recipe, out: Resolved) -> Resolved:
    """A benchmark's forget split (or its facts about [targets] forget) is forgotten; retain and neighbours
    come from its other facts as the benchmark gives them (not filtered by what the model knows: the
    benchmark defines them), else from the known facts of [targets] suite."""
    from repedit.suites.formats import load_benchmark
    from repedit.verify.benchmarks import load_reference
    from repedit.verify.recall import known_facts

    t, b = recipe.targets, recipe.targets.benchmark
    bench = load_benchmark(b["format"], b["path"], b.get("split", ""), b.get("limit"))
    out.benchmark = bench
    out.benchmark_reference = load_reference(b["reference"]) if b.get("reference") else None
    out.forget, rest = bench.select(t.forget)
    if not rest:
        suite = suite_facts(t.suite, (), t.templates)
        rest = known_facts(handle, suite) if t.known_only else suite
    if isinstance(t.retain, tuple):
        by = {f.subject: f for f in rest}
        missing = [s for s in t.retain if s not in by]
        if missing:
            from repedit.errors import InputError

            raise InputError(f"[targets] retain {missing} are not subjects of the benchmark's other facts")
        out.retain = [by[s] for s in t.retain]
        rest = [f for f in rest if f.subject not in set(t.retain)]
    else:
        out.retain, rest = rest[: t.retain], rest[t.retain:]
    out.neighbours = rest[: t.neighbours]
    out.known = list(dict.fromkeys(f.subject for f in (*out.retain, *rest)))
    return _side_targets(handle, recipe, out)


def benchmark_measure(handle, res: Resolved, recipe: Recipe) -> dict | None:
    """The benchmark's own metrics on the forget items (None without [targets.benchmark])."""
    if res.benchmark is None:
        return None
    from repedit.verify.benchmarks import score_benchmark

    return score_benchmark(handle, res.benchmark, [f.id for f in res.forget], res.benchmark_state,
                           res.benchmark_reference, recipe.targets.benchmark.get("max_new_tokens"))


KNOWN_ENTITIES = 60                                       # known subjects the knownness probe trains on


@dataclass(frozen=True)
class KnownnessReferences:
    """The knownness probe's negatives and frames: of the forget facts' kind (the most common one when
    they mix; `counts` per kind), the measure half of `reference_sets` (SAE-align takes the train half)."""

    kind: str
    counts: dict
    frames: tuple[str, ...]
    names: tuple[str, ...]
    source: str                                           # "invented" or "given" (the recipe's references)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "kinds": dict(self.counts), "frames": list(self.frames),
                "references": list(self.names), "references_source": self.source}


def knownness_references(forget, given=()) -> KnownnessReferences:
    """What `resolve` hands the knownness probe for these forget facts (and the recipe's `references`)."""
    from repedit.suites.references import frames, majority_kind, reference_sets

    kind, counts = majority_kind([f.kind for f in forget])
    refs = reference_sets(kind, given)
    return KnownnessReferences(refs.kind, counts, frames(kind).measure, refs.measure, refs.source)


def _fit_knownness(handle, res: Resolved, recipe: Recipe):
    from repedit.sites import Site
    from repedit.verify.sae_codes import fit_knownness

    if recipe.verify.knownness_layer >= 0:
        layer = recipe.verify.knownness_layer
    else:                                                  # the model's preset (SmolLM2-135M: 15, the middle)
        from repedit.models.presets import preset_for

        layer = preset_for(handle).knownness_layer
    handle.check_layer(layer)
    refs = res.unknown_refs or knownness_references(res.forget, getattr(recipe.targets, "references", ()))
    return fit_knownness(handle, None, res.known[:KNOWN_ENTITIES], res.unknown, frames=refs.frames,
                         site=Site(layer, "resid_post"))


def knownness(handle, res: Resolved, recipe: Recipe) -> dict:
    """Leave-the-forget-subjects-out knownness probe: P(known) of the forget subjects (and neighbours)
    under the probe fitted on the original model ("fixed"), and under one re-fitted on this model
    ("refit", the attacker's view); 0.5 = indistinguishable from an invented entity. The first call
    (the run's "before" measurement, on the original model) keeps its fit as the fixed probe."""
    refit = _fit_knownness(handle, res, recipe)
    if res.knownness is None:
        res.knownness = refit
    clf = res.knownness
    forget = [f.subject for f in res.forget]
    out = {"layer": clf.probe.site.layer, "fixed": float(clf.p_known(handle, None, forget).mean()),
           "refit": float(refit.p_known(handle, None, forget).mean()), "refit_cv_accuracy": refit.cv_accuracy,
           "cv_accuracy": clf.cv_accuracy}
    if res.unknown_refs is not None:                      # kind, frames and the negatives' names
        out |= res.unknown_refs.to_dict()
    if res.neighbours:
        out["neighbours_fixed"] = float(clf.p_known(handle, None, [f.subject for f in res.neighbours]).mean())
    return out


def _recalls(handle, groups: list[tuple[list, list[str]]]) -> list[dict | None]:
    """Recall summaries of several (facts, forms) groups, measured together in one batched pass
    (None for an empty group)."""
    from repedit.verify.recall import recall_sets

    asked = [(facts, forms) for facts, forms in groups if facts]
    found = iter(r.summary() for r in recall_sets(handle, asked, progress=False)) if asked else iter(())
    return [next(found) if facts else None for facts, _ in groups]


def neighbour_forms(recipe: Recipe) -> list[str]:
    """Forms the neighbours and unrelated facts are measured in: blank and qa (those the recipe has)."""
    return [f for f in ("blank", "qa") if f in recipe.verify.forms] or list(recipe.verify.forms[:1])


def lm_eval_measure(handle, recipe: Recipe) -> dict | None:
    """[verify] lm_eval_tasks scored on the live model (None when the recipe names none)."""
    v = recipe.verify
    if not v.lm_eval_tasks:
        return None
    from repedit.verify.lm_eval_adapter import lm_eval_scores

    return lm_eval_scores(handle, v.lm_eval_tasks, v.lm_eval_include, v.lm_eval_limit or None)


def measure_facts(handle, res: Resolved, recipe: Recipe) -> dict:
    """Recall of forget (all forms), neighbours and unrelated (blank + qa), perplexity, knownness probe."""
    from repedit.verify.perplexity import perplexity

    side = neighbour_forms(recipe)
    forget, neighbours, unrelated = _recalls(handle, [(res.forget, list(recipe.verify.forms)),
                                                      (res.neighbours, side), (res.unrelated, side)])
    return {"forget": forget, "neighbours": neighbours, "unrelated": unrelated,
            "perplexity": perplexity(handle, res.texts) if res.texts else None,
            "knownness": knownness(handle, res, recipe) if res.unknown else None,
            "lm_eval": lm_eval_measure(handle, recipe),
            "benchmark": benchmark_measure(handle, res, recipe)}


def measure_pool(handle, res: Resolved, recipe: Recipe) -> dict:
    """Per-depth True-LOO and gap (ridge, leave-one-key-out) on the pool, memorised-text log-prob, perplexity."""
    from repedit.fit.pool_features import CONTEXTS, pool_features
    from repedit.verify.perplexity import perplexity
    from repedit.verify.signature import depth_curve

    depths = list(recipe.verify.signature_depths) or [handle.n_layers * 3 // 5]
    feats = pool_features(handle, res.pool, contexts=CONTEXTS[: recipe.targets.contexts], depths=depths,
                          progress=False)
    curve, _ = depth_curve(feats)
    from repedit.fit.pool_screen import screen

    rows = screen(handle, res.pool).rows                    # behaviour: log-prob/token of M and C after the cue
    out = {"depths": depths, "true_loo": curve.true_loo, "gap": curve.gap,
           "memorised_logprob": float(np.mean([r.memorised for r in rows])),
           "control_logprob": float(np.mean([r.paraphrase_c for r in rows])),
           "perplexity": perplexity(handle, res.texts) if res.texts else None,
           "lm_eval": lm_eval_measure(handle, recipe)}
    if recipe.attacks.probes:
        from repedit.verify.probe_attacks import probe_variants_attack, refit_attack

        out["probe_variants"] = probe_variants_attack(feats, depths=depths).to_dict()
        out["refit"] = refit_attack(feats, depths=depths).to_dict()
    return out


def peak_index(before: dict) -> int:
    """Index of the signature's peak depth: where the unedited model's gap (True − Pure LOO) is largest."""
    return int(np.argmax(before["gap"]))


def forget_level(m: dict, peak: int | None = None) -> float:
    """The run's forget number: mean answer probability over forms (facts), or True-LOO at the peak
    depth `peak` (pool; see `peak_index`; default: the largest True-LOO over the measured depths)."""
    if m.get("forget") is not None:
        return float(m["forget"]["mean_probability"])
    return float(m["true_loo"][peak] if peak is not None else np.max(m["true_loo"]))
