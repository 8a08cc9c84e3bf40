"""`repedit edit <method>` for every registered method without a hand-written command: the common
target options plus one option per field of the method's config dataclass (`recipes.methods.METHODS`,
built through `recipes.single.build_method`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from repedit.cli.common import check_subjects, console, names, refuse_existing, show_and_export
from repedit.cli.options import with_config
from repedit.errors import InputError
from repedit.methods import METHODS, MethodSpec
from repedit.recipes.single import FIXED_FIELDS


def _retain(spec: str) -> int | list[str]:
    """--retain: a count of facts or comma-separated subjects."""
    return int(spec) if spec.strip().isdigit() else names(spec)


def _facts_command(name: str, spec: MethodSpec) -> Callable:
    """The `edit <name>` command of a method that forgets facts."""
    def command(forget: str = typer.Option(..., help="comma-separated subjects to forget, e.g. France,Japan"),
                retain: str = typer.Option("10", help="facts to keep: a count (the suite's first other facts) "
                                                      "or comma-separated subjects"),
                suite: str = typer.Option("capitals", help="fact suite the subjects belong to"),
                known_only: bool = typer.Option(False, help="retain only facts the model answers (greedy; slower)"),
                model: str = typer.Option("smollm2-135m", help="model id or path"),
                out: Path = typer.Option(None, help="export the edited model here"),
                force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
        from repedit import load
        from repedit.methods import method_config
        from repedit.recipes.single import build_method

        refuse_existing(out, force)                  # every check that needs no model comes before loading it
        cfg = method_config(name, overrides)
        subjects, keep = names(forget), _retain(retain)
        if not subjects:
            raise InputError(f"--forget names no subject (got {forget!r}); give comma-separated subjects of "
                             f"suite {suite!r}, e.g. --forget France,Japan")
        check_subjects(suite, [*subjects, *([] if isinstance(keep, int) else keep)])
        handle = load(model)
        built = build_method(handle, name, cfg, suite=suite, forget=subjects, retain=keep,
                             known_only=known_only, progress=True)
        console.print(f"built {len(built.edits)} {name} edit(s) in {built.seconds:.1f}s")
        show_and_export(handle, built.edits, list(built.forget), out, force)
    return command


def _pool_command(name: str, spec: MethodSpec) -> Callable:
    """The `edit <name>` command of a method that works on a memorised pool."""
    def command(pools: str = typer.Option("natural", help="memorised pool under probes/memorised/ (screened)"),
                contexts: int = typer.Option(8, help="neutral contexts per key (max 24)"),
                model: str = typer.Option("smollm2-135m", help="model id or path"),
                out: Path = typer.Option(None, help="export the edited model here"),
                force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
        from repedit import load
        from repedit.methods import method_config
        from repedit.recipes.single import build_method
        from repedit.suites.pools import load_pool

        refuse_existing(out, force)                  # every check that needs no model comes before loading it
        cfg = method_config(name, overrides)
        load_pool(pools)
        handle = load(model)
        built = build_method(handle, name, cfg, pool=pools, contexts=contexts, progress=True)
        console.print(f"built {len(built.edits)} {name} edit(s) on {len(built.pool)} keys in {built.seconds:.1f}s")
        show_and_export(handle, built.edits, [], out, force)
    return command


def register(app: typer.Typer, skip: set[str]) -> None:
    """Add `name` to `app` for every registered method not in `skip` (the hand-written ones)."""
    for name, spec in METHODS.items():
        if name in skip:
            continue
        make = _facts_command if spec.targets == "facts" else _pool_command
        command = make(name, spec)
        command.__name__ = f"{name.replace('-', '_')}_cmd"
        command.__doc__ = (f"{escape(spec.source)} ({'repedit' if spec.family == 'repedit' else 'baseline'}; "
                           f"{'forgets facts' if spec.targets == 'facts' else 'works on a memorised pool'}). "
                           "Every field of its config is an option; unset ones keep the config's default.")
        app.command(name)(with_config(spec.config, skip=FIXED_FIELDS)(command))
