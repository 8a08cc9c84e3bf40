"""One registered method on one set of targets, without a run's measurements: the API behind
`repedit edit <method>`. Targets are resolved as a recipe resolves them (`measure.resolve`), then the
method's registered builder makes the (unapplied) edits."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from repedit.errors import ConfigError, InputError, close_matches
from repedit.methods import METHODS, Context, MethodSpec, method_config
from repedit.recipes.schema import Attacks, EditSpec, Recipe, Targets, Verify

#: config fields a method sets itself (the gradient baselines' `objective` is their method name)
FIXED_FIELDS = ("objective",)


def method_spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {sorted(METHODS)} "
                          f"(close: {close_matches(method, METHODS)})")
    return METHODS[method]


def settable_fields(method: str) -> list[str]:
    """The config fields of `method` a user may set (every field but those the method fixes)."""
    return [f.name for f in dataclasses.fields(method_spec(method).config) if f.name not in FIXED_FIELDS]


@dataclass(frozen=True)
class Built:
    """The edits one method made, with the config and targets that made them."""

    method: str
    config: Any
    edits: tuple
    forget: tuple = ()
    retain: tuple = ()
    pool: Any = None
    seconds: float = 0.0


def _check_subjects(suite: str, subjects: Sequence[str]) -> None:
    from repedit.suites import load_suite

    known = {f.subject for f in load_suite(suite)}
    for s in subjects:
        if s not in known:
            raise InputError(f"{s!r} is not a subject of suite {suite!r} (close: {close_matches(s, known, 3)})")


def build_method(handle, method: str, config: Any = None, *, suite: str = "capitals", forget: Sequence[str] = (),
                 retain: int | Sequence[str] = 10, known_only: bool = False, pool: str | None = None,
                 contexts: int = 8, sae: str | None = None, seed: int = 0, progress: bool = False) -> Built:
    """Build `method`'s edits on `handle` (not pushed). `config`: its config dataclass or a dict of fields;
    facts methods forget `forget` (subjects of `suite`) and keep `retain` (a count of the suite's other
    facts, or subjects); pool methods work on the screened memorised pool `pool` in `contexts` contexts.
    Methods with a folded weight form untie the embeddings of `handle` first."""
    from repedit.recipes.measure import resolve
    from repedit.recipes.runner import _seed

    spec = method_spec(method)
    cfg = config if isinstance(config, spec.config) else method_config(method, dict(config or {}))
    if spec.targets == "facts" and not forget:
        raise InputError(f"method {method!r} forgets facts; name the subjects (forget=['France'], --forget France)")
    if spec.targets == "pool" and not pool:
        raise InputError(f"method {method!r} works on a memorised pool; name one (pool='natural', --pools natural)")
    retain = retain if isinstance(retain, int) else tuple(retain)
    if spec.targets == "facts":
        _check_subjects(suite, [*forget, *(retain if isinstance(retain, tuple) else ())])
    targets = Targets(suite=suite, forget=tuple(forget), retain=retain, neighbours=0, unrelated=0,
                      known_only=known_only, pool=pool if spec.targets == "pool" else None, contexts=contexts)
    recipe = Recipe(name=method, model=handle.id, seed=seed, targets=targets, edits=(EditSpec(method, method),),
                    verify=Verify(perplexity_docs=0, knownness=False), attacks=Attacks(prefixes=False), export=None)
    if spec.needs_untied:
        from repedit.edits.fold import untie_embeddings

        untie_embeddings(handle)
    res = resolve(handle, recipe)
    _seed(seed)
    t0 = time.perf_counter()
    ctx = Context(handle=handle, forget=res.forget, retain=res.retain, known=res.known, pool=res.pool,
                  contexts=contexts, sae=sae, progress=progress)
    edits = tuple(spec.build(ctx, cfg))
    return Built(method, cfg, edits, tuple(res.forget), tuple(res.retain), res.pool, time.perf_counter() - t0)
