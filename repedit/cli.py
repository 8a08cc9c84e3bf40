"""The `repedit` command line (typer)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(help="repedit: locate, edit, attack, verify and export representations in language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = Console()


def _register_subcommands() -> None:
    from .locate.cli import app as locate_app

    from .edits.cli import app as edit_app
    from .edits.cli import register_export
    from .recipes.cli import register as register_recipes
    from .verify.cli import register as register_verify

    app.add_typer(locate_app, name="locate")
    app.add_typer(edit_app, name="edit")
    register_verify(app)
    register_export(app)
    register_recipes(app)


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {path}")


@app.command()
def models(prepare: list[str] = typer.Option([], "--prepare", help="convert these packaged ids into the cache now")):
    """List the packaged models, whether each package is installed and whether it is converted."""
    from .models.registry import PACKAGED, converted_dir, ensure_converted, is_cached, is_installed

    for mid in prepare:
        t0 = time.perf_counter()
        ensure_converted(mid)
        console.print(f"{mid}: ready in {time.perf_counter() - t0:.1f}s at {converted_dir(mid)}")
    table = Table(title="packaged models")
    for col in ("id", "installed", "cached", "description", "install"):
        table.add_column(col)
    for mid, m in PACKAGED.items():
        table.add_row(mid, "yes" if is_installed(mid) else "no", "yes" if is_cached(mid) else "no",
                      m.description, m.pip)
    table.add_row("toy:memorise", "yes", "-", "4-layer TransformerLens toy memorising 200 injected sequences", "built in")
    console.print(table)


@app.command("recall")
def recall_cmd(model: str = typer.Option("smollm2-135m", help="model id or path"),
               suite: str = typer.Option("capitals", help="fact suite under probes/facts (or a .jsonl path)"),
               limit: int = typer.Option(None, help="use only the first N facts"),
               json_out: Path = typer.Option(None, "--json", help="write the full result here")):
    """Greedy accuracy and length-normalised answer probability per form (five forms)."""
    from .models import load
    from .suites import load_suite
    from .verify.recall import recall

    handle = load(model)
    facts = load_suite(suite, limit=limit)
    t0 = time.perf_counter()
    res = recall(handle, facts)
    table = Table(title=f"recall: {model} on {suite} ({len(facts)} facts, {time.perf_counter() - t0:.0f}s)")
    for col in ("form", "greedy accuracy", "answer probability", "chance"):
        table.add_column(col)
    for form, s in res.forms.items():
        table.add_row(form, f"{s.accuracy:.3f}", f"{s.probability:.3f}", "" if s.chance is None else f"{s.chance:.2f}")
    table.add_row("mean", f"{res.mean_accuracy:.3f}", f"{res.mean_probability:.3f}", "")
    console.print(table)
    _write_json(json_out, {"suite": suite, **res.to_dict()})


@app.command("filter-known")
def filter_known(model: str = typer.Option("smollm2-135m"), suite: str = typer.Option("capitals"),
                 form: str = typer.Option("blank", help="form whose greedy answer must be correct"),
                 out: Path = typer.Option(None, help="output .jsonl (default probes/facts/<suite>.known-<model>.jsonl)")):
    """Keep the facts the model answers correctly (greedy) and write them as a new suite."""
    from .models import load
    from .suites import load_suite, probes_dir
    from .suites.build import write_suite
    from .verify.recall import known_facts

    handle = load(model)
    facts = load_suite(suite)
    kept = known_facts(handle, facts, form=form)
    out = out or probes_dir() / "facts" / f"{suite}.known-{Path(model).name}.jsonl"
    src = {f.id: f for f in facts}
    rows = [{"id": f.id, "subject": f.subject, "relation": f.relation, "answer": f.answer,
             "aliases": list(f.aliases), "forms": f.forms,
             "source": f"{src[f.id].source}; kept: {model} greedy-correct in form {form!r}"} for f in kept]
    write_suite(out, rows)
    console.print(f"{len(kept)}/{len(facts)} facts known by {model} ({form}); wrote {out}")


@app.command("perplexity")
def perplexity_cmd(model: str = typer.Option("smollm2-135m"), corpus: str = typer.Option("news"),
                   split: str = typer.Option("heldout"), limit: int = typer.Option(None, help="first N documents"),
                   max_length: int = typer.Option(256)):
    """Perplexity on a held-out slice of real English text (probes/text)."""
    from .models import load
    from .suites import load_text
    from .verify.perplexity import perplexity

    handle = load(model)
    docs = load_text(corpus, split)[:limit]
    t0 = time.perf_counter()
    ppl = perplexity(handle, docs, max_length=max_length, progress=True)
    console.print(f"{model} perplexity on {corpus}.{split} ({len(docs)} docs): {ppl:.2f} "
                  f"({time.perf_counter() - t0:.1f}s)")


@app.command("build-probes")
def build_probes(out: Path = typer.Option(None, help="output folder (default probes/facts)"),
                 wiki_dump: Path = typer.Option(None, help="gensim's enwiki ...-shortened.bz2: rebuild probes/text/wiki.*"),
                 held_out: int = typer.Option(150, help="paragraphs kept aside as wiki.heldout")):
    """Regenerate the fact suites from offline packages (needs the [data] extra)."""
    from .suites import probes_dir
    from .suites.build import build_all

    counts = build_all(out or probes_dir() / "facts")
    for name, n in counts.items():
        console.print(f"{name}: {n} facts")
    if wiki_dump is not None:
        from .suites.wikitext import extract

        paras = extract(wiki_dump)
        text_dir = probes_dir() / "text"
        (text_dir / "wiki.train.txt").write_text("\n".join(paras[:-held_out]) + "\n")
        (text_dir / "wiki.heldout.txt").write_text("\n".join(paras[-held_out:]) + "\n")
        console.print(f"wiki: {len(paras) - held_out} train + {held_out} held-out paragraphs")


@app.command("train-sae")
def train_sae(out: Path = typer.Option(Path("saes/smollm2-135m-L15-topk"), help="output directory (sae-lens format)"),
              model: str = typer.Option("smollm2-135m"), layer: int = typer.Option(15),
              point: str = typer.Option("resid_post"), d_sae: int = typer.Option(2048), k: int = typer.Option(32),
              n_tokens: int = typer.Option(400_000), context: int = typer.Option(128),
              batch_size: int = typer.Option(1024), epochs: int = typer.Option(2), lr: float = typer.Option(5e-3),
              outlier_factor: float = typer.Option(3.0), seed: int = typer.Option(0),
              force: bool = typer.Option(False, help="replace an existing directory")):
    """Train a TopK SAE with sae-lens on real text, evaluate it on held-out text, save it."""
    from .models import load
    from .saes import SAETrainConfig, evaluate, save, train

    cfg = SAETrainConfig(model=model, layer=layer, point=point, d_sae=d_sae, k=k, n_tokens=n_tokens, context=context,
                         batch_size=batch_size, epochs=epochs, lr=lr, outlier_factor=outlier_factor, seed=seed)
    if out.exists() and not force:
        from .errors import ConfigError

        raise ConfigError(f"{out} exists; pass --force to replace it")
    handle = load(model)
    sae, _acts, timings = train(handle, cfg)
    t0 = time.perf_counter()
    quality = evaluate(handle, sae, layer, point, outlier_factor=outlier_factor)
    timings["eval_seconds"] = time.perf_counter() - t0
    save(sae, out, cfg, quality, timings, force=force)
    console.print_json(data={"quality": quality, **timings})
    console.print(f"saved {out}")


@app.command()
def demo(model: str = typer.Option("smollm2-135m")):
    """A short real tour: load the default model, complete a fact, capture a site, measure recall."""
    import torch

    from .capture import capture
    from .models import load
    from .sites import Site
    from .suites import load_suite
    from .verify.recall import recall

    t0 = time.perf_counter()
    handle = load(model)
    console.print(f"[bold]loaded[/] {handle.id}: {handle.n_layers} layers, d_model {handle.d_model}, "
                  f"d_mlp {handle.d_mlp} in {time.perf_counter() - t0:.1f}s")
    batch = handle.encode(["The capital of France is"])
    out = handle.model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=handle.pad_id)
    console.print(f"'The capital of France is' -> {handle.tokenizer.decode(out[0, batch['input_ids'].shape[1]:])!r}")
    site = Site(handle.n_layers // 2, "resid_post")
    acts = capture(handle, ["The Eiffel Tower is in Paris.", "Mount Fuji is in Japan."], [site])[site]
    console.print(f"captured {site}: shape {tuple(acts.shape)}, cosine between the two texts "
                  f"{float(torch.cosine_similarity(acts[0], acts[1], dim=0)):.3f}")
    for suite in ("capitals", "unknown-entities"):
        res = recall(handle, load_suite(suite, limit=8), progress=False)
        console.print(f"recall on 8 {suite}: " + ", ".join(f"{k} {v.accuracy:.2f}" for k, v in res.forms.items()))
    console.print(f"demo done in {time.perf_counter() - t0:.0f}s")


_register_subcommands()


def main() -> None:
    from .errors import ReprEditError

    try:
        app(standalone_mode=False)
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


if __name__ == "__main__":
    main()
