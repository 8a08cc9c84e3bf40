"""`repedit models | build-probes | train-sae | demo`: the packaged models, the probe data, SAE training
and a short tour."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from .common import console


def register(app: typer.Typer) -> None:
    @app.command()
    def models(prepare: list[str] = typer.Option([], "--prepare",
                                                 help="convert these packaged ids into the cache now")):
        """List the packaged models, whether each package is installed and whether it is converted."""
        from ..models.registry import PACKAGED, converted_dir, ensure_converted, is_cached, is_installed

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
                     held_out: int = typer.Option(150, help="paragraphs kept aside as wiki.heldout")):
        """Regenerate the fact suites from offline packages (needs the [data] extra)."""
        from ..suites import probes_dir
        from ..suites.build import build_all

        counts = build_all(out or probes_dir() / "facts")
        for name, n in counts.items():
            console.print(f"{name}: {n} facts")
        if wiki_dump is not None:
            from ..suites.wikitext import extract

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
        from ..models import load
        from ..saes import SAETrainConfig, evaluate, save, train

        cfg = SAETrainConfig(model=model, layer=layer, point=point, d_sae=d_sae, k=k, n_tokens=n_tokens,
                             context=context,
                             batch_size=batch_size, epochs=epochs, lr=lr, outlier_factor=outlier_factor, seed=seed)
        if out.exists() and not force:
            from ..errors import ConfigError

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

        from ..capture import capture
        from ..models import load
        from ..sites import Site
        from ..suites import load_suite
        from ..verify.recall import recall

        t0 = time.perf_counter()
        handle = load(model)
        console.print(f"[bold]loaded[/] {handle.id}: {handle.n_layers} layers, d_model {handle.d_model}, "
                      f"d_mlp {handle.d_mlp} in {time.perf_counter() - t0:.1f}s")
        batch = handle.encode(["The capital of France is"])
        out = handle.model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=handle.pad_id)
        completion = handle.tokenizer.decode(out[0, batch["input_ids"].shape[1]:])
        console.print(f"'The capital of France is' -> {completion!r}")
        site = Site(handle.n_layers // 2, "resid_post")
        acts = capture(handle, ["The Eiffel Tower is in Paris.", "Mount Fuji is in Japan."], [site])[site]
        console.print(f"captured {site}: shape {tuple(acts.shape)}, cosine between the two texts "
                      f"{float(torch.cosine_similarity(acts[0], acts[1], dim=0)):.3f}")
        for suite in ("capitals", "unknown-entities"):
            res = recall(handle, load_suite(suite, limit=8), progress=False)
            console.print(f"recall on 8 {suite}: " + ", ".join(f"{k} {v.accuracy:.2f}" for k, v in res.forms.items()))
        console.print(f"demo done in {time.perf_counter() - t0:.0f}s")
