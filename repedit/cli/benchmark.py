"""`repedit benchmark show | score`: a standard benchmark read from local files, and its metrics on a model
(the retain model's numbers are the `reference` of TOFU's forget quality and MUSE's PrivLeak)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from repedit.cli.common import console

app = typer.Typer(help="standard benchmarks (TOFU, MUSE, WMDP, CounterFact, zsRE) from local files",
                  no_args_is_help=True)

FORMAT = typer.Argument(..., help="tofu | muse | wmdp | counterfact | zsre")
PATH = typer.Argument(..., help="the local folder (TOFU, MUSE, WMDP) or file (WMDP, CounterFact, zsRE)")


@app.command()
def show(fmt: str = FORMAT, path: Path = PATH, split: str = typer.Option("", help="TOFU: forget01/05/10"),
         limit: int = typer.Option(None, help="items per split")):
    """What repedit reads from the files: splits, counts and the first forget fact's forms."""
    from repedit.suites.formats import load_benchmark

    b = load_benchmark(fmt, path, split, limit)
    console.print_json(json.dumps(b.to_dict()))
    f = b.forget[0]
    console.print(f"first forget fact: {f.id} subject={f.subject!r} answer={f.answer!r}")
    for form, spec in f.forms.items():
        console.print(f"  {form}: {spec['prompt']!r}")


@app.command()
def score(fmt: str = FORMAT, path: Path = PATH, model: str = typer.Option("smollm2-135m", help="model id or folder"),
          split: str = typer.Option("", help="TOFU: forget01/05/10"), limit: int = typer.Option(None),
          out: Path = typer.Option(None, help="write the numbers here (JSON; a recipe's benchmark reference)"),
          dtype: str = typer.Option("float32")):
    """The benchmark's own metrics on a model; `--out` writes them for \\[targets.benchmark] reference."""
    import torch

    from repedit import load
    from repedit.suites.formats import load_benchmark
    from repedit.verify.benchmarks import headline, score_benchmark

    b = load_benchmark(fmt, path, split, limit)
    h = load(model, dtype=getattr(torch, dtype))
    metrics = {"model": h.id, **score_benchmark(h, b)}
    console.print_json(json.dumps(headline(metrics)))
    if out:
        from repedit.formats import stamped

        score = stamped("benchmark-score", {"benchmark": metrics, "files": b.to_dict()})
        out.write_text(json.dumps(score, indent=1, default=float))
        console.print(f"wrote {out}")
