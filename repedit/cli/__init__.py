"""The `repedit` command line (typer): one module per verb group, each calling the API only.

models (models, build-probes, train-sae) · demo · verify (recall, filter-known, perplexity,
screen-pools, signature, regimes) · locate (sub-commands) · edit (hand-written commands, plus one per
registered method: `methods`) · export · run (run, compare) · presets (list, show, build) ·
distributed (stats, measure under torchrun).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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
from repedit.cli.exits import DEBUG_ENV, report, set_debug

app = typer.Typer(help="repedit: locate, edit, attack, verify and export representations in language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="on an unexpected error, print its traceback "
                                     f"(also {DEBUG_ENV}=1)")) -> None:
    """repedit: locate, edit, attack, verify and export representations in language models."""
    set_debug(debug)


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


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry (`argv`: the arguments, default sys.argv[1:]): offline by default; exits 0 on
    success, 2 on a typed or usage error, 1 on any other error, 130 on Ctrl-C, each with one line and no
    traceback unless --debug (see repedit.cli.exits)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_debug(False)
    try:
        code = app(args=None if argv is None else list(argv), prog_name=None if argv is None else "repedit",
                   standalone_mode=False)      # without standalone mode click returns typer.Exit's code
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        raise SystemExit(report(exc)) from None
    finally:
        set_debug(False)
    if isinstance(code, int) and code:
        raise SystemExit(code)


__all__ = ["app", "main"]
