"""`repedit models | build-probes | train-sae | demo`: the packaged models, the probe data, SAE training
and a short tour."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from repedit.cli.common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def models(prepare: list[str] = typer.Option([], "--prepare",
                                                 help="convert these packaged ids into the cache now")):
        """List the packaged models, whether each package is installed and whether it is converted."""
        from repedit.models.registry import PACKAGED, converted_dir, ensure_converted, is_cached, is_installed

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
        table.add_row("toy:memorise", "yes", "-", "4-layer TransformerLens toy memorising 200 injected sequences",
                      "built in")
        console.print(table)

    @app.command("build-probes")
    def build_probes(out: Path = typer.Option(None, help="output folder (default probes/facts)"),
                     wiki_dump: Path = typer.Option(None, help="gensim's enwiki ...-shortened.bz2: rebuild "
                                                               "probes/text/wiki.*"),
                     held_out: int = typer.Option(150, help="paragraphs kept aside as wiki.heldout"),
                     only: list[str] = typer.Option([], "--only", help="build only these suites")):
        """Regenerate the fact suites from offline packages (needs the \\[data] extra; people-occupations needs
        WordNet (WORDNET_DIR), us-cities the gensim wheel)."""
        from repedit.suites import probes_dir
        from repedit.suites.build import build_all

        counts = build_all(out or probes_dir() / "facts", only=list(only) or None)
        for name, n in counts.items():
            console.print(f"{name}: {n} facts")
        if wiki_dump is not None:
            from repedit.suites.wikitext import extract

            paras = extract(wiki_dump)
            text_dir = probes_dir() / "text"
            (text_dir / "wiki.train.txt").write_text("\n".join(paras[:-held_out]) + "\n")
            (text_dir / "wiki.heldout.txt").write_text("\n".join(paras[-held_out:]) + "\n")
            console.print(f"wiki: {len(paras) - held_out} train + {held_out} held-out paragraphs")

    @app.command("train-sae")
    def train_sae(out: Path = typer.Option(Path("saes/smollm2-135m-L15-topk"),
                                           help="output directory (sae-lens format)"),
                  model: str = typer.Option("smollm2-135m"), layer: int = typer.Option(15),
                  point: str = typer.Option("resid_post"), d_sae: int = typer.Option(2048), k: int = typer.Option(32),
                  n_tokens: int = typer.Option(400_000), context: int = typer.Option(128),
                  batch_size: int = typer.Option(1024), epochs: int = typer.Option(2), lr: float = typer.Option(5e-3),
                  outlier_factor: float = typer.Option(3.0), seed: int = typer.Option(0),
                  force: bool = typer.Option(False, help="replace an existing directory")):
        """Train a TopK SAE with sae-lens on real text, evaluate it on held-out text, save it."""
        from repedit.fit.saes import SAETrainConfig, evaluate, save, train
        from repedit.models import load

        cfg = SAETrainConfig(model=model, layer=layer, point=point, d_sae=d_sae, k=k, n_tokens=n_tokens,
                             context=context,
                             batch_size=batch_size, epochs=epochs, lr=lr, outlier_factor=outlier_factor, seed=seed)
        if out.exists() and not force:
            from repedit.errors import ConfigError

            raise ConfigError(f"{out} exists; pass --force to replace it")
        handle = load(model)
        sae, _acts, timings = train(handle, cfg)
        t0 = time.perf_counter()
        quality = evaluate(handle, sae, layer, point, outlier_factor=outlier_factor)
        timings["eval_seconds"] = time.perf_counter() - t0
        save(sae, out, cfg, quality, timings, force=force)
        console.print_json(data={"quality": quality, **timings})
        console.print(f"saved {out}")
