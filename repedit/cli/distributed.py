"""`repedit distributed stats | measure`: the statistics and the measurements split over processes.

Run under torchrun (one process per GPU, or several on the CPU with gloo), e.g.
`torchrun --nproc_per_node 2 -m repedit.cli distributed stats --layers 4,5,6 --tokens 4000`;
without torchrun they run as one process. Rank 0 prints the JSON (and writes --json / --save-dir).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import typer

from repedit.cli.common import ints, names, write_json
from repedit.errors import InputError
from repedit.suites import FORMS

app = typer.Typer(help="Key statistics and measurements over several processes, GPUs or machines (torchrun).",
                  no_args_is_help=True)


DTYPE = typer.Option("float32", help="float32 | bfloat16 | float16")


def _emit(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2))


def _load(model: str, dtype: str):
    import torch

    from repedit import distributed as D

    if dtype not in ("float32", "bfloat16", "float16"):
        raise InputError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    return D.load(model, dtype=getattr(torch, dtype))


@app.command("stats")
def stats(model: str = typer.Option("smollm2-135m", help="model id or path"), dtype: str = DTYPE,
          layers: str = typer.Option("4,5,6", help="comma-separated layers"),
          tokens: int = typer.Option(40_000, help="token budget (the one-process cut-off rule of key_moments)"),
          context: int = typer.Option(128, help="tokens per text"),
          store: bool = typer.Option(True, "--store/--no-store", help="rank 0 writes them where ROCR looks"),
          save_dir: Path = typer.Option(None, help="also write the merged fitters here (L<layer>.safetensors)"),
          json_out: Path = typer.Option(None, "--json", help="write the summary here")):
    """MLP key second moments (ROCR's statistics) over the training corpus, fitters all_reduced over ranks."""
    from repedit import distributed as D
    from repedit.edits.key_stats import corpus_texts

    with D.session():
        handle = _load(model, dtype)
        t0 = time.perf_counter()
        fitters, shards = D.key_fitters_distributed(handle, ints(layers), corpus_texts(), n_tokens=tokens,
                                                    context=context, progress=True)
        seconds = time.perf_counter() - t0
        if store:
            D.store_key_fitters(handle, fitters, tokens, context=context)
        if D.rank() == 0:
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                for layer, f in fitters.items():
                    f.save(save_dir / f"L{layer}.safetensors")
            payload = {"model": model, "world": D.world(), "layers": sorted(fitters), "n_tokens": tokens,
                       "context": context, "stored": store, "seconds": round(seconds, 2),
                       "n": {str(k): f.n for k, f in fitters.items()},
                       "trace": {str(k): float(f.sums()[2].trace() / f.n) for k, f in fitters.items()},
                       "shards": [asdict(s) for s in shards]}
            _emit(payload)
            write_json(json_out, payload)


@app.command("measure")
def measure(model: str = typer.Option("smollm2-135m", help="model id or path"), dtype: str = DTYPE,
            suite: str = typer.Option("capitals", help="fact suite (or a .jsonl / .csv path)"),
            facts: int = typer.Option(None, help="use only the first N facts"),
            forms: str = typer.Option(",".join(FORMS), help="comma-separated recall forms"),
            corpus: str = typer.Option("news"), split: str = typer.Option("heldout"),
            docs: int = typer.Option(20, help="first N documents for perplexity (0: none)"),
            max_length: int = typer.Option(256, help="perplexity: tokens per document"),
            max_new_tokens: int = typer.Option(24), batch_size: int = typer.Option(16, help="recall batch"),
            json_out: Path = typer.Option(None, "--json", help="write the full result (per-fact rows) here")):
    """Recall of a fact suite and perplexity on held-out text, items split over ranks and combined."""
    from repedit import distributed as D
    from repedit.suites import load_suite, load_text

    with D.session():
        handle = _load(model, dtype)
        t0 = time.perf_counter()
        res, recall_shards = D.recall_distributed(handle, load_suite(suite, limit=facts), names(forms),
                                                  max_new_tokens=max_new_tokens, batch_size=batch_size)
        ppl, ppl_shards = (D.perplexity_distributed(handle, load_text(corpus, split)[:docs], max_length=max_length)
                           if docs else (None, ()))
        if D.rank() == 0:
            head = {"model": model, "world": D.world(), "suite": suite, "perplexity": ppl,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "shards": {"recall": [asdict(s) for s in recall_shards],
                               "perplexity": [asdict(s) for s in ppl_shards]}}
            _emit({**head, **res.summary()})
            write_json(json_out, {**head, **res.to_dict()})
