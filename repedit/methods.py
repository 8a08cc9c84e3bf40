"""The registry of edit methods a recipe can name: each method's config dataclass, what it targets
(facts or a memorised pool), whether it is repedit's or a baseline, and how it is built.

Every builder takes a `Context` (the live model and the resolved targets) and the method's config,
and returns the list of `Edit`s to push (ROCR and SAE alignment make one per forgotten subject).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from repedit.errors import ConfigError, close_matches
from repedit.models.presets import preset_for, resolve_config


@dataclass(frozen=True)
class PGAConfig:
    """Closed-form PGA / MD-PGA / adversarial PGA at a depth, exported in the folded weight form."""

    PRESET_SECTION: ClassVar[str] = "pga"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("depth",)

    depth: int | None = None                  #: d = output of layer d−1; None: preset (signature's peak; SmolLM2 18)
    k: int = 1                                #: directions (MD-PGA; PGA uses 1)
    stop_below: float = 0.55                  #: adversarial rounds stop below this re-fit LOO accuracy
    max_rounds: int = 7

    def __post_init__(self) -> None:
        if (self.depth is not None and self.depth < 1) or self.k < 1 or not 0.5 <= self.stop_below <= 1 \
                or self.max_rounds < 1:
            raise ConfigError("PGAConfig needs depth >= 1, k >= 1, 0.5 <= stop_below <= 1, max_rounds >= 1")


@dataclass(frozen=True)
class LeaceConfig:
    """LEACE erasure at a depth (folded weight form): forget vs retain prompts, or memorised vs control."""

    PRESET_SECTION: ClassVar[str] = "leace"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("depth",)

    depth: int | None = None                  #: None: the model's preset (SmolLM2: 8)
    forms: tuple[str, ...] = ("blank", "paraphrase", "adversarial")   #: fact forms used to fit (facts only)

    def __post_init__(self) -> None:
        if (self.depth is not None and self.depth < 1) or not self.forms:
            raise ConfigError("LeaceConfig needs depth >= 1 and at least one form")


@dataclass
class Context:
    """What a builder sees: the model and the resolved targets of a run."""

    handle: Any
    forget: Sequence = ()
    retain: Sequence = ()
    known: Sequence[str] = ()                 #: other known subjects of the suite (reference entities)
    pool: Any = None                          #: screened memorised pool (pool targets)
    contexts: int = 8
    sae: str | None = None
    progress: bool = False
    cache: dict = field(default_factory=dict)
    monitor: Callable[[], dict] | None = None #: the run's forget measure, for baselines that train (tracking)
    references: Sequence[str] = ()            #: the recipe's unknown references (empty: invented, of each kind)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    targets: str                              #: "facts" | "pool"
    config: type
    build: Callable[[Context, Any], list]
    family: str                               #: "repedit" | "baseline"
    source: str
    needs_untied: bool = False                #: folded weight forms project the embedding
    needs_subject: bool = False               #: reads the subject's tokens in each form (checked by recipes)


def rocr_redirects(facts: Sequence, strategy: str) -> list[str | None]:
    """Per fact, what ROCR redirects it to: the fact's own `redirect_to`, else (strategy "unknown") an
    invented entity of the fact's kind — from the references edits train on, never the ones that measure —
    else None (strategy "refusal": the optimised refusal value)."""
    from repedit.suites.references import as_subject, reference_sets

    out, used = [], {}
    for f in facts:
        given = getattr(f, "redirect_to", None)
        if given:
            out.append(given)
        elif strategy == "refusal":
            out.append(None)
        else:
            names = reference_sets(f.kind).train
            i = used.get(f.kind, 0)
            used[f.kind] = i + 1
            out.append(as_subject(f.kind, names[i % len(names)]))
    return out


def _rocr(ctx: Context, cfg) -> list:
    """One ROCR edit per forget fact, each built on the model with the earlier ones applied (the sequential
    path: pushed in this order they give the same weights), retain subjects protected."""
    from contextlib import ExitStack

    from repedit.edits.rocr import ROCR
    from repedit.edits.stack import applied

    protect = [f.subject for f in ctx.retain] if cfg.protect_retain else []
    rocr = ROCR(ctx.handle, cfg, progress=ctx.progress, protect=protect)
    built = []
    with ExitStack() as so_far:
        for f, redirect in zip(ctx.forget, rocr_redirects(ctx.forget, cfg.redirect)):
            edit = rocr.edit(f.subject, redirect, fact=f)
            built.append(edit)
            so_far.enter_context(applied(ctx.handle, edit))
    return built


def _mrp(ctx: Context, cfg) -> list:
    from repedit.edits.mrp import MRP

    mrp = MRP(ctx.handle, cfg)
    mrp.task(list(ctx.forget), list(ctx.retain))
    return [mrp.edit()]


def sae_align_unknown(fact, given: Sequence[str], n_reference: int) -> tuple[str, ...]:
    """SAE-align's unknown references for `fact`: the train half of `reference_sets` for its kind (the
    knownness probe of repedit.recipes.measure takes the measure half, so the two never share a name)."""
    from repedit.suites.references import reference_sets

    return reference_sets(fact.kind, given, n_train=n_reference).train


def _sae_align(ctx: Context, cfg) -> list:
    from repedit.edits.sae_align import sae_align
    from repedit.fit.saes import load_sae

    # the run's SAE, else the one the model's preset names (an SAE of another model is refused)
    sae = load_sae(ctx.sae or preset_for(ctx.handle).sae_path(), handle=ctx.handle)
    # unknowns and (cfg.frames None) frames of each target's kind; the targets share what only the unedited
    # model decides (reference codes, the clean-text pool) — no edit is applied between them
    shared: dict = {}
    return [sae_align(ctx.handle, sae, f, list(ctx.known), sae_align_unknown(f, ctx.references, cfg.n_reference),
                      retain=list(ctx.retain), config=cfg, progress=ctx.progress, shared=shared) for f in ctx.forget]


def _gradient(objective: str) -> Callable:
    def build(ctx: Context, cfg) -> list:
        from repedit.baselines.gradient import gradient_unlearn

        return [gradient_unlearn(ctx.handle, list(ctx.forget), list(ctx.retain),
                                 dataclasses.replace(cfg, objective=objective), monitor=ctx.monitor)]
    return build


def _rmu(ctx: Context, cfg) -> list:
    from repedit.baselines.rmu import rmu_unlearn

    return [rmu_unlearn(ctx.handle, list(ctx.forget), list(ctx.retain), cfg, monitor=ctx.monitor)]


def _pool_contexts(ctx: Context) -> dict:
    from repedit.fit.pool_features import CONTEXTS

    return {"contexts": CONTEXTS[: ctx.contexts]}


def _pga(method: str) -> Callable:
    def build(ctx: Context, cfg) -> list:
        from repedit.edits.fold import fold_projection
        from repedit.edits.pga import adversarial_pga, pga

        cfg = resolve_config(cfg, ctx.handle)                # None fields from the model's preset
        kw = _pool_contexts(ctx)
        if method == "adversarial":
            proj = adversarial_pga(ctx.handle, ctx.pool, depth=cfg.depth, stop_below=cfg.stop_below,
                                   max_rounds=cfg.max_rounds, **kw)
        else:
            proj = pga(ctx.handle, ctx.pool, depth=cfg.depth, k=cfg.k if method == "md" else 1, method=method, **kw)
        return [fold_projection(ctx.handle, proj, cfg)]
    return build


def _pga_trained(ctx: Context, cfg) -> list:
    from repedit.edits.pga_trained import trained_pga

    return [trained_pga(ctx.handle, ctx.pool, cfg, progress=ctx.progress)]


def _leace(ctx: Context, cfg) -> list:
    from repedit.baselines.leace import leace_facts, leace_pool
    from repedit.edits.fold import fold_projection

    cfg = resolve_config(cfg, ctx.handle)                    # None fields from the model's preset
    if ctx.pool is not None and not ctx.forget:
        erasure = leace_pool(ctx.handle, ctx.pool, depth=cfg.depth, **_pool_contexts(ctx))
    else:
        erasure = leace_facts(ctx.handle, ctx.forget, ctx.retain, depth=cfg.depth, forms=cfg.forms)
    edit = fold_projection(ctx.handle, erasure, cfg)
    return [dataclasses.replace(edit, method="leace-folded")]


def _configs():
    from repedit.baselines.gradient import GradientConfig
    from repedit.baselines.rmu import RMUConfig
    from repedit.edits.mrp import MRPConfig
    from repedit.edits.pga_trained import TrainedPGAConfig
    from repedit.edits.rocr import ROCRConfig
    from repedit.edits.sae_align import SAEAlignConfig

    return ROCRConfig, MRPConfig, SAEAlignConfig, GradientConfig, RMUConfig, TrainedPGAConfig


def _registry() -> dict[str, MethodSpec]:
    ROCRConfig, MRPConfig, SAEAlignConfig, GradientConfig, RMUConfig, TrainedPGAConfig = _configs()
    specs = [
        MethodSpec("rocr", "facts", ROCRConfig, _rocr, "repedit", "ROCR, rank-one concept redirection (ORT)",
                   needs_subject=True),
        MethodSpec("mrp", "facts", MRPConfig, _mrp, "repedit", "MRP, metamorphosis representation projection",
                   needs_untied=True),
        MethodSpec("sae-align", "facts", SAEAlignConfig, _sae_align, "repedit",
                   "SAE-guided internal representation unlearning (2025)", needs_subject=True),
        MethodSpec("pga", "pool", PGAConfig, _pga("pga"), "repedit", "PGA, probe-geometry alignment (2026)", True),
        MethodSpec("md-pga", "pool", PGAConfig, _pga("md"), "repedit", "MD-PGA (2026)", True),
        MethodSpec("adversarial-pga", "pool", PGAConfig, _pga("adversarial"), "repedit", "adversarial PGA (2026)",
                   True),
        MethodSpec("pga-trained", "pool", TrainedPGAConfig, _pga_trained, "repedit", "trained PGA (2026)"),
        MethodSpec("ga", "facts", GradientConfig, _gradient("ga"), "baseline", "gradient ascent"),
        MethodSpec("npo", "facts", GradientConfig, _gradient("npo"), "baseline", "NPO (Zhang et al. 2024)"),
        MethodSpec("rmu", "facts", RMUConfig, _rmu, "baseline", "RMU (Li et al. 2024, WMDP)"),
        MethodSpec("leace", "facts", LeaceConfig, _leace, "baseline", "LEACE (Belrose et al. 2023), concept-erasure",
                   True),
        MethodSpec("leace-pool", "pool", LeaceConfig, _leace, "baseline", "LEACE on memorised vs control", True),
    ]
    return {s.name: s for s in specs}


METHODS: dict[str, MethodSpec] = _registry()


def method_config(method: str, values: dict[str, Any]):
    """The method's config dataclass built from recipe values (lists → tuples); unknown keys raise."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {sorted(METHODS)} "
                          f"(close: {close_matches(method, METHODS)})")
    cls = METHODS[method].config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields or k == "objective"]
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field {unknown[0]!r}; valid: "
                          f"{sorted(k for k in fields if k != 'objective')}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kw)
