"""`repedit edit <method>` for every registered method without a hand-written command: the common
target options plus one option per field of the method's config dataclass (`recipes.methods.METHODS`,
built through `recipes.single.build_method`)."""

from __future__ import annotations

from pathlib import Path

import typer

from repedit.cli.common import console, names, refuse_existing, show_and_export
from repedit.cli.options import with_config
from repedit.methods import METHODS, MethodSpec
from repedit.recipes.single import FIXED_FIELDS


def _retain(spec: str) -> int | list[str]:
    return int(spec) if spec.strip().isdigit() else names(spec)


def _facts_command(name: str, spec: MethodSpec):
    def command(forget: str = typer.Option(..., help="comma-separated subjects to forget, e.g. France,Japan"),
                retain: str = typer.Option("10", help="facts to keep: a count (the suite's first other facts) "
                                                      "or comma-separated subjects"),
                suite: str = typer.Option("capitals", help="fact suite the subjects belong to"),
                known_only: bool = typer.Option(False, help="retain only facts the model answers (greedy; slower)"),
                model: str = typer.Option("smollm2-135m", help="model id or path"),
                out: Path = typer.Option(None, help="export the edited model here"),
                force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
        from repedit import load
        from repedit.recipes.single import build_method

        refuse_existing(out, force)
        handle = load(model)
        built = build_method(handle, name, overrides, suite=suite, forget=names(forget), retain=_retain(retain),
                             known_only=known_only, progress=True)
        console.print(f"built {len(built.edits)} {name} edit(s) in {built.seconds:.1f}s")
        show_and_export(handle, built.edits, list(built.forget), out, force)
    return command


def _pool_command(name: str, spec: MethodSpec):
    def command(pools: str = typer.Option("natural", help="memorised pool under probes/memorised/ (screened)"),
                contexts: int = typer.Option(8, help="neutral contexts per key (max 24)"),
                model: str = typer.Option("smollm2-135m", help="model id or path"),
                out: Path = typer.Option(None, help="export the edited model here"),
                force: bool = typer.Option(False, help="replace an existing export"), overrides: dict = None):
        from repedit import load
        from repedit.recipes.single import build_method

        refuse_existing(out, force)
        handle = load(model)
        built = build_method(handle, name, overrides, pool=pools, contexts=contexts, progress=True)
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
        command.__doc__ = (f"{spec.source} ({'repedit' if spec.family == 'repedit' else 'baseline'}; "
                           f"{'forgets facts' if spec.targets == 'facts' else 'works on a memorised pool'}). "
                           "Every field of its config is an option; unset ones keep the config's default.")
        app.command(name)(with_config(spec.config, skip=FIXED_FIELDS)(command))
