"""The `repedit` command line (typer): one module per verb group, each calling the API only.

models (models, build-probes, train-sae) · demo · verify (recall, filter-known, perplexity,
screen-pools, signature, regimes) · locate (sub-commands) · edit (hand-written commands, plus one per
registered method: `methods`) · export · run (run, compare) · presets (list, show, build) ·
distributed (stats, measure under torchrun).
"""

from __future__ import annotations

import os

import typer

from repedit.cli import (
    benchmark,
    certify,
    demo,
    distributed,
    edit,
    locate,
    method_commands,
    models,
    presets,
    run,
    verify,
)
from repedit.cli.common import console

app = typer.Typer(help="repedit: locate, edit, attack, verify and export representations in language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)

models.register(app)
demo.register(app)
verify.register(app)
app.add_typer(locate.app, name="locate")
app.add_typer(presets.app, name="presets")
app.add_typer(benchmark.app, name="benchmark")
app.add_typer(distributed.app, name="distributed")
method_commands.register(edit.app, skip={c.name for c in edit.app.registered_commands})
app.add_typer(edit.app, name="edit")
edit.register_export(app)
run.register(app)
certify.register(app)


def main() -> None:
    """Console-script entry: offline by default, typed errors printed without a traceback."""
    from repedit.errors import ReprEditError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        code = app(standalone_mode=False)      # without standalone mode click returns typer.Exit's code
    except ReprEditError as exc:
        console.print(f"[red]error ({type(exc).__name__}):[/] {exc}")
        raise SystemExit(2) from None
    except (typer.Exit, typer.Abort) as exc:
        raise SystemExit(getattr(exc, "exit_code", 1)) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
    if isinstance(code, int) and code:
        raise SystemExit(code)


__all__ = ["app", "main"]
