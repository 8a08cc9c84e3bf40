"""`repedit locate ...`: run a locator on the real model, print a table, write JSON and a plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from repedit.cli.common import console
from repedit.errors import InputError

app = typer.Typer(help="Find where a concept, fact or property lives (tables, JSON, plots).", no_args_is_help=True)


def _save(json_out: Path | None, payload: dict, plot_values=None, **plot_kw) -> None:
    """Write `payload` to `json_out` and, given `plot_values`, a bar plot beside it."""
    if json_out is None:
        return
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {json_out}")
    if plot_values is not None:
        from repedit.plots import bars

        console.print(f"wrote {bars(plot_values, json_out.with_suffix('.png'), **plot_kw)}")


def _layers(spec: str | None) -> list[int] | None:
    """--layers: "A-B" (inclusive) or comma-separated integers; None when not given."""
    if not spec:
        return None
    try:
        if "-" in spec:
            a, b = spec.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--layers takes A-B or comma-separated integers (e.g. 20-29 or 4,5,6), "
                         f"got {spec!r}") from None


def _fact(suite: str, subject: str) -> tuple:
    """(the fact of `suite` about `subject`, the other facts); InputError when there is none."""
    from repedit.suites import load_suite

    facts = load_suite(suite)
    match = [f for f in facts if f.subject.lower() == subject.lower()]
    if not match:
        raise InputError(f"no fact about {subject!r} in suite {suite!r}; subjects include "
                         f"{[f.subject for f in facts[:8]]}")
    return match[0], [f for f in facts if f is not match[0]]


@app.command("concept-vectors")
def concept_vectors_cmd(concept: str = typer.Option(..., help="concept name, e.g. 'Paris'"),
                        words: str = typer.Option(None, help="comma-separated concept words (default: the name)"),
                        model: str = typer.Option("smollm2-135m"), layers: str = typer.Option(None, help="e.g. 20-29"),
                        top: int = typer.Option(10),
                        validate_suite: str = typer.Option(None, help="fact suite for the causal check"),
                        subject: str = typer.Option(None, help="subject of the target fact in that suite"),
                        json_out: Path = typer.Option(None, "--json")):
    """Rank MLP value vectors by vocabulary projection; optionally validate the best causally."""
    from repedit.locate.causal import check_columns
    from repedit.locate.concept_vectors import concept_vectors
    from repedit.models import load

    chosen = _layers(layers)
    target, others = _fact(validate_suite, subject) if validate_suite and subject else (None, [])
    handle = load(model)
    loc = concept_vectors(handle, concept, words.split(",") if words else None,
                          layers=chosen, n_candidates=top)
    table = Table(title=f"concept vectors for {concept!r} (tokens: {', '.join(loc.concept_tokens[:8])})")
    for col in ("layer", "column", "hits@200", "best rank", "top projected tokens"):
        table.add_column(col)
    for c in loc.candidates:
        table.add_row(str(c.layer), str(c.column), str(c.hits), str(c.best_rank),
                      " ".join(repr(t) for t in c.top_tokens[:8]))
    console.print(table)
    payload = loc.to_dict()
    if target is not None:
        best = loc.candidates[0]
        check = check_columns(handle, best.layer, [best.column], [target], others[:6])
        console.print(f"causal check of layer {best.layer} column {best.column}: answer log-prob drop "
                      f"{check.target_drop:.4f} on {subject}, {check.other_drop:.4f} on others, "
                      f"{check.random_drop:.4f} for random columns -> specific: {check.specific}")
        payload["causal_check"] = check.to_dict()
    first = loc.candidates[0].layer if loc.candidates else -1
    _save(json_out, payload, list(loc.hits_per_layer), title=f"best concept-token hits per layer: {concept}",
          ylabel="hits in top-200", highlight=[first])


@app.command("neurons")
def neurons_cmd(suite: str = typer.Option("capitals"), subject: str = typer.Option(..., help="e.g. France"),
                model: str = typer.Option("smollm2-135m"), json_out: Path = typer.Option(None, "--json")):
    """Knowledge neurons of one fact (integrated gradients), with suppress/amplify checks."""
    from repedit.locate.causal import check_neurons
    from repedit.locate.knowledge_neurons import knowledge_neurons
    from repedit.models import load

    fact, others = _fact(suite, subject)
    handle = load(model)
    kn = knowledge_neurons(handle, fact)
    table = Table(title=f"knowledge neurons of {fact.id} (p = {kn.threshold_share:.2f}, {kn.seconds:.0f}s)")
    table.add_column("layer")
    table.add_column("unit")
    for layer, unit in kn.neurons:
        table.add_row(str(layer), str(unit))
    console.print(table)
    payload = kn.to_dict()
    if kn.neurons:
        sup = check_neurons(handle, kn.by_layer(), [fact], others[:6], factor=0.0)
        amp = check_neurons(handle, kn.by_layer(), [fact], others[:6], factor=2.0, n_random=0)
        console.print(f"suppress: drop {sup.target_drop:.4f} on target, {sup.other_drop:.4f} on others, "
                      f"{sup.random_drop:.4f} for random neurons; amplify: drop {amp.target_drop:.4f} (negative = up)")
        payload.update(suppress=sup.to_dict(), amplify=amp.to_dict())
    _save(json_out, payload, kn.layer_max_attr, title=f"max IG attribution per layer: {fact.id}", ylabel="attribution",
          highlight=sorted({layer for layer, _ in kn.neurons}))


@app.command("sae")
def sae_cmd(sae_dir: Path = typer.Option(None, "--sae", help="SAE directory; default: the model's preset"),
            model: str = typer.Option("smollm2-135m"),
            known_suite: str = typer.Option("capitals"), unknown_suite: str = typer.Option("unknown-entities"),
            top: int = typer.Option(10), json_out: Path = typer.Option(None, "--json")):
    """Latents separating entities the model knows from made-up ones."""
    from repedit.fit.saes import load_sae
    from repedit.locate.sae_features import known_unknown_latents
    from repedit.models import load
    from repedit.models.presets import preset_for
    from repedit.suites import load_suite

    handle = load(model)
    sae = load_sae(sae_dir or preset_for(handle).sae_path(), handle=handle)
    known = [f.subject for f in load_suite(known_suite)][:40]
    unknown = [f.subject.removeprefix("the Republic of ") for f in load_suite(unknown_suite)][:40]
    k, u = known_unknown_latents(handle, sae, known, unknown, top=top)
    for loc in (k, u):
        table = Table(title=f"{loc.description} at {loc.site} (probe on codes: {loc.extra['probe_accuracy']:.2f})")
        for col in ("latent", "rate known", "rate unknown"):
            table.add_column(col)
        for f in loc.features:
            table.add_row(str(f.latent), f"{f.target:.2f}", f"{f.control:.2f}")
        console.print(table)
    _save(json_out, {"known": k.to_dict(), "unknown": u.to_dict()},
          [f.score for f in k.features] + [-f.score for f in u.features],
          title="known (left) vs unknown (right) entity latents", ylabel="firing-rate difference", xlabel="latent",
          labels=[str(f.latent) for f in k.features + u.features])


@app.command("probe")
def probe_cmd(positive_suite: str = typer.Option("capitals"), negative_suite: str = typer.Option("elements"),
              frame: str = typer.Option("Tell me about {subject}.", help="text frame around each subject"),
              point: str = typer.Option("resid_post"),
              layers: str = typer.Option(None, help="default: every 3rd layer"),
              method: str = typer.Option("logistic"), model: str = typer.Option("smollm2-135m"),
              json_out: Path = typer.Option(None, "--json")):
    """Cross-validated linear probe per layer separating two suites' subjects."""
    from repedit.forward.capture import capture
    from repedit.locate.probe_directions import fit_probe
    from repedit.models import load
    from repedit.sites import Site
    from repedit.suites import load_suite

    try:
        pos = [frame.format(subject=f.subject) for f in load_suite(positive_suite)]
        neg = [frame.format(subject=f.subject) for f in load_suite(negative_suite)]
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise InputError(f"--frame {frame!r} is no format with only {{subject}} in it ({exc!r}); double other braces: "
                         "{{ }}") from None
    given = _layers(layers)
    handle = load(model)
    chosen = given or list(range(0, handle.n_layers, 3))
    sites = [Site(layer, point) for layer in chosen]
    t0 = time.perf_counter()
    acts = capture(handle, pos + neg, sites)
    labels = [1] * len(pos) + [0] * len(neg)
    table = Table(title=f"{method} probe: {positive_suite} vs {negative_suite} ({len(pos)}+{len(neg)} texts)")
    for col in ("site", "cv accuracy", "chance"):
        table.add_column(col)
    results = []
    for s in sites:
        p = fit_probe(acts[s], labels, method=method, site=s)
        results.append({"site": str(s), "layer": s.layer, "cv_accuracy": p.cv_accuracy, "chance": p.chance})
        table.add_row(str(s), f"{p.cv_accuracy:.3f}", f"{p.chance:.2f}")
    console.print(table)
    console.print(f"{time.perf_counter() - t0:.1f}s")
    _save(json_out, {"results": results}, [r["cv_accuracy"] for r in results], title="probe accuracy per layer",
          ylabel="cv accuracy", labels=[str(s.layer) for s in sites])


@app.command("trace")
def trace_cmd(suite: str = typer.Option(None, help="fact suite, e.g. capitals"),
              subject: str = typer.Option(None, help="trace this subject's fact (or the subject of --prompt)"),
              prompt: str = typer.Option(None, help="a free prompt (needs --answer and --subject)"),
              answer: str = typer.Option(None, help="the answer of --prompt"),
              form: str = typer.Option("blank", help="which form of a suite fact to trace"),
              limit: int = typer.Option(10, help="without --subject: aggregate over the suite's first N facts"),
              model: str = typer.Option("smollm2-135m"),
              kinds: str = typer.Option("resid,mlp,attn", help="comma-separated: resid, mlp, attn"),
              layers: str = typer.Option(None, help="traced layers, e.g. 10-20 (default: all)"),
              samples: int = typer.Option(5), noise: float = typer.Option(3.0, help="noise scale in embedding stds"),
              window: int = typer.Option(None, help="sub-layer window (default: about n_layers / 5)"),
              seed: int = typer.Option(0), n: int = typer.Option(3, help="how many consecutive layers to choose"),
              out: Path = typer.Option(None, help="folder for trace.json and trace.png")):
    """Causal tracing (ROME): restore clean states into a subject-corrupted run, per token and layer."""
    from repedit.cli.common import names
    from repedit.locate.tracing import ROLES, TraceAggregate, causal_trace, peak, trace_facts, traced_layers
    from repedit.models import load
    from repedit.suites import load_suite

    if prompt is not None and not (answer and subject):
        raise InputError("--prompt needs --answer and --subject")
    if prompt is None and not suite:
        raise InputError("pass --suite NAME [--subject S] or --prompt '...' --answer A --subject S")
    kw = dict(kinds=names(kinds), samples=samples, noise=noise, window=window, seed=seed, layers=_layers(layers))
    fact = _fact(suite, subject)[0] if prompt is None and subject else None
    handle = load(model)
    t0 = time.perf_counter()
    if prompt is not None:
        trace = causal_trace(handle, prompt, answer, subject, **kw)
    elif fact is not None:
        trace = trace_facts(handle, [fact], form, **kw).results[0]
    else:
        trace = trace_facts(handle, load_suite(suite, limit=limit), form, **kw)
    agg = isinstance(trace, TraceAggregate)
    what = (f"{len(trace.results)} facts of {suite} ({form})" if agg
            else f"{trace.prompt!r} -> {trace.answer_token!r} (subject tokens {list(trace.subject_span)})")
    table = Table(title=f"causal trace of {what}: clean p={trace.clean:.3f}, corrupted p={trace.corrupted:.3f}, "
                        f"{time.perf_counter() - t0:.0f}s")
    for col in ("kind", "peak @ last subject token", "peak @ last token", "overall peak", f"best {n} layers"):
        table.add_column(col)
    chosen = {}
    for kind in trace.kinds:
        cells = []
        for role in (ROLES[2], ROLES[5]):
            try:
                p = peak(trace, kind, role)
                cells.append(f"layer {p.layer}: {p.recovery:.2f}")
            except InputError:
                cells.append("-")
        top = peak(trace, kind)
        where = top.where if agg else f"{trace.tokens[top.where].strip()!r}"
        try:
            chosen[kind] = traced_layers(trace, kind, n=n)
        except InputError:
            chosen[kind] = ()
        table.add_row(kind, *cells, f"{where} layer {top.layer}: {top.recovery:.2f}",
                      ",".join(map(str, chosen[kind])) or "-")
    console.print(table)
    console.print(f"recovery = (restored - corrupted) / (clean - corrupted); traced_layers(mlp, n={n}) = "
                  f"{chosen.get('mlp') or '-'}")
    if out is not None:
        from repedit.plots import trace_aggregate_heatmap, trace_heatmap

        out.mkdir(parents=True, exist_ok=True)
        payload = {**trace.to_dict(), "model": model, "traced_layers": {k: list(v) for k, v in chosen.items()}}
        (out / "trace.json").write_text(json.dumps(payload, indent=2))
        png = (trace_aggregate_heatmap if agg else trace_heatmap)(trace, out / "trace.png")
        console.print(f"wrote {out / 'trace.json'} and {png}")
