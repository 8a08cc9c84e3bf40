"""`repedit presets list | show MODEL | build MODEL`: per-model defaults (edit layers, signature depth, SAE)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from repedit.cli.common import console

app = typer.Typer(help="Per-model presets: the layers, depths and SAE each method uses by default.",
                  no_args_is_help=True)


@app.command("list")
def list_cmd():
    """Models that have a preset."""
    from repedit.models.presets import available

    for mid in available():
        console.print(mid)


@app.command("show")
def show_cmd(model: str = typer.Argument(..., help="model id, e.g. smollm2-135m")):
    """Print a model's preset (values and the sweep numbers that chose them)."""
    from repedit.models.presets import preset_for

    console.print_json(json.dumps(preset_for(model).to_dict(), default=str))


@app.command("build")
def build_cmd(model: str = typer.Argument(..., help="model id or path, e.g. gemma3-270m"),
              quick: bool = typer.Option(False, help="tiny sizes: a smoke test, not a preset to ship"),
              out: Path = typer.Option(None, help="write here instead of the package's presets folder"),
              from_sweep: Path = typer.Option(None, help="committed ROCR layer-sweep JSON (skips the sweep)"),
              from_signature: Path = typer.Option(None, help="committed signature JSON (with --from-sweep)")):
    """Run the sweeps that choose a model's defaults (ROCR layer window, signature peak depth) and write
    its preset JSON."""
    from repedit.recipes.presets import main

    argv = [model] + (["--quick"] if quick else []) + (["--out", str(out)] if out else [])
    if from_sweep or from_signature:
        argv += ["--from-sweep", str(from_sweep), "--from-signature", str(from_signature)]
    main(argv)
