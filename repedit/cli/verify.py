"""`repedit recall | filter-known | perplexity` (what the model knows) and `repedit screen-pools |
signature | regimes` (the memorisation signature) from the shell."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from repedit.cli.common import console, write_json
from repedit.errors import InputError


def _pool(handle, name: str, n_keys: int, theta_m: float | None, theta_c: float | None):
    from repedit.fit.pool_screen import THETA_C, THETA_M, screened
    from repedit.suites.pools import load_pool, toy_pool

    if handle.is_toy:
        if name not in ("toy", "natural"):
            raise InputError(f"toy models take the pool 'toy' (memorised vs held-out sequences), got {name!r}")
        return toy_pool(handle, n_keys=n_keys), None
    return screened(handle, load_pool(name), theta_m=THETA_M if theta_m is None else theta_m,
                    theta_c=THETA_C if theta_c is None else theta_c)


def register(app: typer.Typer) -> None:
    @app.command("recall")
    def recall_cmd(model: str = typer.Option("smollm2-135m", help="model id or path"),
                   suite: str = typer.Option("capitals", help="fact suite under probes/facts (or a .jsonl path)"),
                   limit: int = typer.Option(None, help="use only the first N facts"),
                   json_out: Path = typer.Option(None, "--json", help="write the full result here")):
        """Greedy accuracy and length-normalised answer probability per form (five forms)."""
        from repedit.models import load
        from repedit.suites import load_suite
        from repedit.verify.recall import recall

        handle = load(model)
        facts = load_suite(suite, limit=limit)
        t0 = time.perf_counter()
        res = recall(handle, facts)
        table = Table(title=f"recall: {model} on {suite} ({len(facts)} facts, {time.perf_counter() - t0:.0f}s)")
        for col in ("form", "greedy accuracy", "answer probability", "chance"):
            table.add_column(col)
        for form, s in res.forms.items():
            chance = "" if s.chance is None else f"{s.chance:.2f}"
            table.add_row(form, f"{s.accuracy:.3f}", f"{s.probability:.3f}", chance)
        table.add_row("mean", f"{res.mean_accuracy:.3f}", f"{res.mean_probability:.3f}", "")
        console.print(table)
        write_json(json_out, {"suite": suite, **res.to_dict()})

    @app.command("filter-known")
    def filter_known(model: str = typer.Option("smollm2-135m"), suite: str = typer.Option("capitals"),
                     form: str = typer.Option("blank", help="form whose greedy answer must be correct"),
                     out: Path = typer.Option(None, help="output .jsonl "
                                                         "(default probes/facts/<suite>.known-<model>.jsonl)")):
        """Keep the facts the model answers correctly (greedy) and write them as a new suite."""
        from repedit.models import load
        from repedit.suites import load_suite, probes_dir
        from repedit.suites.build import write_suite
        from repedit.verify.recall import known_facts

        handle = load(model)
        facts = load_suite(suite)
        kept = known_facts(handle, facts, form=form)
        out = out or probes_dir() / "facts" / f"{suite}.known-{Path(model).name}.jsonl"
        src = {f.id: f for f in facts}
        rows = [{"id": f.id, "subject": f.subject, "relation": f.relation, "kind": f.kind, "answer": f.answer,
                 "aliases": list(f.aliases), "forms": f.forms,
                 "source": f"{src[f.id].source}; kept: {model} greedy-correct in form {form!r}"} for f in kept]
        write_suite(out, rows)
        console.print(f"{len(kept)}/{len(facts)} facts known by {model} ({form}); wrote {out}")

    @app.command("perplexity")
    def perplexity_cmd(model: str = typer.Option("smollm2-135m"), corpus: str = typer.Option("news"),
                       split: str = typer.Option("heldout"), limit: int = typer.Option(None, help="first N documents"),
                       max_length: int = typer.Option(256)):
        """Perplexity on a held-out slice of real English text (probes/text)."""
        from repedit.models import load
        from repedit.suites import load_text
        from repedit.verify.perplexity import perplexity

        handle = load(model)
        docs = load_text(corpus, split)[:limit]
        t0 = time.perf_counter()
        ppl = perplexity(handle, docs, max_length=max_length, progress=True)
        console.print(f"{model} perplexity on {corpus}.{split} ({len(docs)} docs): {ppl:.2f} "
                      f"({time.perf_counter() - t0:.1f}s)")

    @app.command("screen-pools")
    def screen_pools(model: str = typer.Option("smollm2-135m", help="model id or path"),
                     pools: str = typer.Option("natural", help="pool under probes/memorised/"),
                     theta_m: float = typer.Option(None, help="memorised text must score above this (log-prob/token)"),
                     theta_c: float = typer.Option(None, help="paraphrases must score below this"),
                     json_out: Path = typer.Option(None, "--json", help="write the report here")):
        """Per-token log-prob of every memorised text and paraphrase; which keys pass screening."""
        from repedit import load
        from repedit.fit.pool_screen import THETA_C, THETA_M, screen
        from repedit.suites.pools import load_pool

        handle = load(model)
        rep = screen(handle, load_pool(pools), theta_m=THETA_M if theta_m is None else theta_m,
                     theta_c=THETA_C if theta_c is None else theta_c)
        table = Table(title=f"{pools} on {model}: log-prob/token after {rep.skip} tokens "
                            f"(pass: M > {rep.theta_m}, C and B < {rep.theta_c})")
        for col in ("key", "M", "C", "B", "pass"):
            table.add_column(col)
        for r in rep.rows:
            table.add_row(r.key, f"{r.memorised:.3f}", f"{r.paraphrase_c:.3f}", f"{r.paraphrase_b:.3f}",
                          "yes" if r.passed else "no")
        console.print(table)
        console.print(f"{len(rep.passing)}/{len(rep.rows)} keys pass")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(rep.to_dict(), indent=2))
            console.print(f"wrote {json_out}")

    @app.command("signature")
    def signature_cmd(model: str = typer.Option("smollm2-135m", help="model id or path (toy:memorise for the toy)"),
                      pools: str = typer.Option("natural", help="pool under probes/memorised/ ('toy' for toys)"),
                      out: Path = typer.Option(Path("runs/signature"), help="folder for signature.json and .png"),
                      contexts: int = typer.Option(24, help="number of neutral contexts (max 24)"),
                      n_keys: int = typer.Option(24, help="toy pools: number of keys"),
                      shuffle_seeds: int = typer.Option(5, help="seeds of the shuffled-label control"),
                      random_init: bool = typer.Option(True, help="also run the random-initialisation control"),
                      alpha: float = typer.Option(None, help="ridge penalty (default: repedit's documented value)"),
                      theta_m: float = typer.Option(None), theta_c: float = typer.Option(None)):
        """Leave-one-key-out True/Pure probe accuracy and the memorisation gap at every depth."""
        from repedit import load
        from repedit.fit.pool_features import CONTEXTS
        from repedit.verify.signature import ALPHA, signature

        handle = load(model)
        pool, rep = _pool(handle, pools, n_keys, theta_m, theta_c)
        if rep is not None:
            console.print(f"screening: {len(rep.passing)}/{len(rep.rows)} keys pass: {', '.join(rep.passing)}")
        if not 2 <= contexts <= len(CONTEXTS):
            raise InputError(f"--contexts must be in 2..{len(CONTEXTS)}")
        ctx = None if handle.is_toy else CONTEXTS[:contexts]
        res = signature(handle, pool, contexts=ctx, alpha=ALPHA if alpha is None else alpha,
                        shuffle_seeds=range(shuffle_seeds), random_init=random_init)
        console.print(res.table())
        console.print(f"peak gap {res.peak_gap:+.3f} at depth {res.peak_depth}; seconds {res.seconds}")
        out.mkdir(parents=True, exist_ok=True)
        console.print(f"wrote {res.save_json(out / 'signature.json')}")
        console.print(f"wrote {res.plot(out / 'signature.png')}")

    @app.command("regimes")
    def regimes_cmd(model: str = typer.Option("toy:memorise", help="a toy model"),
                    n_keys: int = typer.Option(24, help="secrets injected and natural keys used"),
                    json_out: Path = typer.Option(None, "--json")):
        """Natural vs fine-tune-injected memorisation on a toy: does a probe for one read the other?"""
        from repedit import load
        from repedit.verify.regimes import natural_vs_injected

        handle = load(model)
        res = natural_vs_injected(handle, n_keys=n_keys)
        console.print(res.table())
        console.print(f"after injection: secrets recalled {res.recall_secrets:.2f}, "
                      f"natural set recalled {res.recall_natural:.2f}")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(res.to_dict(), indent=2))
            console.print(f"wrote {json_out}")
