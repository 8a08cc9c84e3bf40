"""`repedit demo`: the main job on the default model in a few minutes — pick a fact the model knows,
locate it (causal tracing), edit it out (ROCR), measure it in five forms and on neighbours before and
after, try an attack (adversarial prefixes), export, reload the export in plain transformers, and
print where the report is."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from repedit.cli.common import console, styled

RECIPE = """# written by `repedit demo`: rerun with `repedit run {out}/recipe.toml --force`
[run]
name = "demo"
seed = 0
[model]
id = "{model}"
[targets]
suite = "capitals"
forget = [{subject}]
retain = 6
neighbours = 6
unrelated = 6
[verify]
perplexity_docs = 5
knownness = false
[attacks]
prefixes = true
[[edit]]
method = "rocr"
config = {{ stats_tokens = 6000 }}
[export]
edit = "rocr"
"""


def _pick(handle, subject: str | None):
    from repedit.suites import load_suite
    from repedit.verify.recall import known_facts

    facts = load_suite("capitals")
    if subject:
        chosen = [f for f in facts if f.subject == subject]
        if not chosen:
            from repedit.errors import InputError, close_matches

            close = close_matches(subject, [f.subject for f in facts])
            raise InputError(f"{subject!r} is not a capitals subject (close: {close})")
        return chosen[0]
    known = known_facts(handle, facts[:12])
    return known[0] if known else facts[0]


def _greedy(model, tokenizer, prompt: str) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def run_demo(model: str = "smollm2-135m", out: Path = Path("runs/demo"), subject: str | None = None) -> Path:
    from repedit.locate.tracing import causal_trace, peak
    from repedit.models import load
    from repedit.plots import trace_heatmap
    from repedit.recipes.runner import run_recipe
    from repedit.recipes.schema import parse_recipe

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    handle = load(model)
    fact = _pick(handle, subject)
    blank = fact.forms["blank"]["prompt"]
    console.print(styled("1. pick", "bold", f" {handle.id} ({handle.n_layers} layers): {blank!r} → {fact.answer!r}"))

    trace = causal_trace(handle, blank, fact.answer, fact.subject, samples=3)
    (out / "trace.json").write_text(json.dumps(trace.to_dict()))
    png = trace_heatmap(trace, out / "trace.png")
    subj = peak(trace, "resid", at="last subject token")
    last = peak(trace, "resid", at="last token")
    console.print(styled("2. locate", "bold", f" causal trace (subject embeddings noised: p {trace.clean:.3f} → "
                  f"{trace.corrupted:.3f}): restoring the residual at the subject's last token brings back "
                  f"{subj.recovery:.0%} of what the noise took at layer {subj.layer}; at the last token, layer "
                  f"{last.layer} ({png})"))

    text = RECIPE.format(model=model, subject=json.dumps(fact.subject), out=out)
    (out / "recipe.toml").write_text(text)
    console.print(styled("3. edit, verify, attack, export", "bold", " (ROCR at the model's preset layers; recipe "
                         f"{out / 'recipe.toml'})"))
    result = run_recipe(parse_recipe(text, str(out / "recipe.toml")), out / "run", force=True,
                        echo=lambda m: console.print(f"   {m}"), command=f"repedit run {out / 'recipe.toml'}")
    rep = result.report
    before, after = rep["before"], rep["edits"]["rocr"]["after"]
    table = Table(title=f"{fact.subject}: answer probability (greedy accuracy) before → after")
    for col in ("measure", "before", "after"):
        table.add_column(col)
    for form, b in before["forget"]["forms"].items():
        a = after["forget"]["forms"][form]
        table.add_row(form, f"{b['probability']:.3f} ({b['accuracy']:.0%})",
                      f"{a['probability']:.3f} ({a['accuracy']:.0%})")
    for what in ("neighbours", "unrelated"):
        table.add_row(f"{what} (mean)", f"{before[what]['mean_probability']:.3f}",
                      f"{after[what]['mean_probability']:.3f}")
    table.add_row("perplexity (news)", f"{before['perplexity']:.2f}", f"{after['perplexity']:.2f}")
    pb = before.get("prefixes", {}).get("best-of", {}).get("probability")
    pa = rep["edits"]["rocr"]["attacks"].get("prefixes", {}).get("best-of", {}).get("probability")
    if pb is not None and pa is not None:
        table.add_row("attack: prefixes, best of", f"{pb:.3f}", f"{pa:.3f}")
    console.print(table)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    export_dir = result.dir / "export"
    plain = AutoModelForCausalLM.from_pretrained(export_dir)
    tok = AutoTokenizer.from_pretrained(export_dir)
    edited, original = _greedy(plain, tok, blank), _greedy(handle.model, handle.tokenizer, blank)
    console.print(styled("4. reload", "bold", f" {export_dir} in plain transformers (no repedit code): "
                         f"{blank!r} → {edited!r} (original: {original!r})"))
    console.print(styled("5. report", "bold", f" {result.dir / 'report.html'}  ·  demo done in "
                         f"{time.perf_counter() - t0:.0f}s"))
    return result.dir


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(model: str = typer.Option("smollm2-135m"), out: Path = typer.Option(Path("runs/demo")),
             subject: str = typer.Option(None, help="a capitals subject (default: the first the model knows)")):
        """The main job in a few minutes: pick a known fact, locate it, edit it out, verify, attack, export,
        reload the export in plain transformers, print where the report is."""
        run_demo(model, out, subject)
