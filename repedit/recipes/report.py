"""report.html of a run: readable without the code. What was edited, the comparison table,
before/after per form, plots (recall bars, relearning curves, per-depth probe curves with the
unedited model and chance as controls), the attacks, and the commands that reproduce it.
Plots are PNGs under plots/ and embedded in the page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from repedit.errors import InputError
from repedit.formats import check_format

COLUMNS = [("edit", "edit"), ("family", "family"), ("peak_depth", "peak depth"), ("forget_before", "forget before"),
           ("forget_after", "forget after"), ("max_loo_over_depths_after", "max LOO over depths after"),
           ("neighbours_after", "neighbours after"), ("unrelated_after", "unrelated after"),
           ("perplexity_after", "perplexity after"), ("p_known_fixed_after", "P(known), original probe"),
           ("p_known_refit_after", "LOO P(known), re-fit probe"),
           ("memorised_logprob_after", "memorised log-prob after"),
           ("refit_after", "re-fit probe after"), ("prefix_best_of", "prefix attack (best of)"),
           ("relearn_held_out", "relearned (held-out)"), ("sae_restored", "SAE-restored"),
           ("trace_accuracy", "trace detection acc."), ("weight_diff_named", "weight-diff: named"),
           ("weight_diff_key_rank", "weight-diff: key rank"), ("extraction_tuned_recovered", "tuned lens: recovered"),
           ("extraction_tuned_any_layer_after", "tuned lens: any layer"),
           ("mia_min_k_pp_auc_after", "MIA min-k++ AUC"), ("remind_auc_after", "REMIND AUC"),
           ("seconds", "edit seconds"),
           ("time_ratio_to_baseline", "time ÷ fastest baseline at ≤ forget"),
           ("matched_baseline", "that baseline"), ("matched_baseline_seconds", "its seconds to that level"),
           ("matched_baseline_neighbours", "its neighbours there")]


def read_report(run_dir: str | Path) -> dict:
    """A run's report.json (`repedit.recipes.runner` writes it), its format version checked (repedit.formats)."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise InputError(f"{run_dir} has no report.json; run a recipe first (`repedit run RECIPE`)")
    report = json.loads(path.read_text())
    check_format("report", report, path, redo=f"`repedit run RECIPE --out {run_dir} --force`")
    return report


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict], columns) -> str:
    cols = [(k, label) for k, label in columns if any(k in r for r in rows)]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k, _ in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _finish(plt, fig, ax, ref: float | None, ref_label: str, xlabel: str, ylabel: str, title: str, path: Path) -> str:
    """Reference line (unless `ref` is None), labels, legend; saved and embedded."""
    if ref is not None:
        ax.axhline(ref, color="grey", ls=":", label=ref_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    img = _png(fig, path)
    plt.close(fig)
    return img


def _plots(report: dict, run_dir: Path) -> list[str]:
    from repedit.plots import _pyplot

    plt, out, edits, before = _pyplot(), [], report["edits"], report["before"]
    names = ["before"] + list(edits)
    if before.get("forget") is not None:
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 3.4))
        groups = [g for g in ("forget", "neighbours", "unrelated") if before.get(g)]
        width = 0.8 / len(groups)
        for gi, g in enumerate(groups):
            vals = [before[g]["mean_probability"]] + [e["after"][g]["mean_probability"] for e in edits.values()]
            ax.bar([i + gi * width for i in range(len(names))], vals, width, label=g)
        ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_ylabel("answer probability")
        ax.set_title("recall: forget (mean over forms), neighbours, unrelated")
        ax.legend(fontsize=8)
        out.append(_png(fig, run_dir / "plots" / "recall.png"))
        plt.close(fig)
    tracked = {k: e["trajectory"] for k, e in edits.items()
               if e.get("trajectory") and "neighbours" in e["trajectory"][0]}
    if tracked and before.get("neighbours"):
        out.append(_tradeoff(plt, report, tracked, run_dir / "plots" / "tradeoff.png"))
    curves = {k: e["attacks"]["relearn"] for k, e in edits.items() if "relearn" in e.get("attacks", {})}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for k, c in curves.items():
            line, = ax.plot(c["steps"], c["held_out"], marker="o", label=f"{k} held-out")
            ax.plot(c["steps"], c["train"], ls="--", color=line.get_color(), label=f"{k} trained-on")
        out.append(_finish(plt, fig, ax, before["forget"]["mean_probability"], "before edit", "fine-tune step",
                           "answer probability", "relearning attack", run_dir / "plots" / "relearn.png"))
    if before.get("true_loo") is not None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.plot(before["depths"], before["true_loo"], marker="o", color="black", label="unedited")
        for k, e in edits.items():
            ax.plot(e["after"]["depths"], e["after"]["true_loo"], marker="o", label=k)
        out.append(_finish(plt, fig, ax, 0.5, "chance", "depth", "True-LOO accuracy",
                           "memorisation signature probe per depth", run_dir / "plots" / "probe_depths.png"))
    return out


def _tradeoff(plt, report: dict, tracked: dict, path: Path) -> str:
    """Forget vs neighbours: each trained baseline's path while it trained, every edit's end point."""
    before, rows = report["before"], report["comparison"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, traj in tracked.items():
        ax.plot([r["forget"] for r in traj], [r["neighbours"] for r in traj], marker=".", lw=1, alpha=0.7,
                label=f"{k} while training")
    for r in rows:
        if r.get("neighbours_after") is not None:
            ax.scatter(r["forget_after"], r["neighbours_after"], s=60, zorder=3,
                       marker="o" if r["family"] == "repedit" else "s")
            ax.annotate(r["edit"], (r["forget_after"], r["neighbours_after"]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
    ax.scatter(before["forget"]["mean_probability"], before["neighbours"]["mean_probability"], marker="*", s=140,
               color="black", zorder=3, label="unedited")
    ax.set_xlabel("forget (answer probability, mean over forms) — lower is more forgotten")
    ax.set_ylabel("neighbours (answer probability) — higher is kept")
    ax.set_title("forget vs neighbours (up and left is better)")
    ax.legend(fontsize=7)
    img = _png(fig, path)
    plt.close(fig)
    return img


def _forms_table(report: dict) -> str:
    before = report["before"].get("forget")
    if not before:
        return ""
    rows = [{"model": "before", **{f: v["probability"] for f, v in before["forms"].items()}}]
    for k, e in report["edits"].items():
        rows.append({"model": k, **{f: v["probability"] for f, v in e["after"]["forget"]["forms"].items()}})
    cols = [("model", "model")] + [(f, f) for f in before["forms"]]
    return "<h2>Forget facts, answer probability per form</h2>" + _table(rows, cols)


def _attack_tables(report: dict) -> str:
    parts = []
    pre = {k: e["attacks"]["prefixes"] for k, e in report["edits"].items() if "prefixes" in e.get("attacks", {})}
    if pre:
        rows = [{"model": "before", **{v: s["probability"] for v, s in report["before"]["prefixes"].items()}}] + \
            [{"model": k, **{v: s["probability"] for v, s in p.items()}} for k, p in pre.items()]
        variants = list(next(iter(pre.values())))
        parts.append("<h2>Prefix and in-context attacks (answer probability)</h2>" +
                     _table(rows, [("model", "model")] + [(v, v) for v in variants]))
    if "probe_variants" in report["before"]:
        rows = []
        for k, m in [("before", report["before"])] + [(k, e["after"]) for k, e in report["edits"].items()]:
            pv = m["probe_variants"]
            row = {"model": k, **{v: max(acc) for v, acc in zip(pv["variants"], pv["accuracy"])}}
            row["re-fit"] = max(m["refit"]["accuracy"][0])
            rows.append(row)
        cols = [("model", "model")] + [(v, v) for v in report["before"]["probe_variants"]["variants"]] + \
            [("re-fit", "re-fit")]
        parts.append("<h2>Probe variants and the re-fit attacker (LOO accuracy, max over depths)</h2>" +
                     _table(rows, cols))
    return "".join(parts)


def _lm_eval_table(report: dict) -> str:
    """Capability (lm-eval): per task its acc / acc_norm (± stderr) before and after each edit."""
    before = report["before"].get("lm_eval")
    if not before:
        return ""
    models = [("before", before)] + [(k, e["after"].get("lm_eval") or {}) for k, e in report["edits"].items()]
    cols, rows = [("model", "model")], [{"model": k} for k, _ in models]
    for task, first in before.items():
        for metric in ("acc", "acc_norm"):
            if metric not in first:
                continue
            cols.append((f"{task}/{metric}", f"{task} {metric}"))
            for row, (_, scores) in zip(rows, models):
                m = scores.get(task, {})
                err = m.get(f"{metric}_stderr")
                row[f"{task}/{metric}"] = (f"{m[metric]:.3f}" + (f" ± {err:.3f}" if err is not None else "")
                                           if m.get(metric) is not None else None)
        cols.append((f"{task}/n", f"{task} items"))
        for row, (_, scores) in zip(rows, models):
            row[f"{task}/n"] = scores.get(task, {}).get("n")
    return ("<h2>Capability (lm-eval)</h2><p>lm-eval tasks on the in-memory model before and after each edit "
            "(acc: the choice with the highest summed log-prob; acc_norm: that log-prob per character; "
            "± its standard error).</p>" + _table(rows, cols))


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The comparison columns, with one per quantisation scheme that ran (after trace detection)."""
    quant = [(k, f"{k[6:-10]}: recovered") for k in dict.fromkeys(k for r in rows for k in r)
             if k.startswith("quant_") and k.endswith("_recovered")]
    at = [k for k, _ in COLUMNS].index("weight_diff_named")
    return COLUMNS[:at] + quant + COLUMNS[at:]


def write_html(report: dict, run_dir: str | Path) -> Path:
    from repedit.recipes.report_benchmark import benchmark_section
    from repedit.recipes.report_recovery import recovery_section

    run_dir = Path(run_dir)
    r, t = report["recipe"], report["targets"]
    what = (f"<p>Model <b>{html.escape(r['model'])}</b>. Forget: {html.escape(', '.join(t['forget']) or '—')}; "
            f"retain {len(t['retain'])}, neighbours {len(t['neighbours'])} (never trained on), unrelated "
            f"{len(t['unrelated'])}; pool: {html.escape(str(t['pool']))}. Seed {r['seed']}.</p>")
    methods = "".join(f"<li><b>{html.escape(k)}</b> — {html.escape(e['source'])}; config "
                      f"<code>{html.escape(json.dumps(e['config'], default=str))}</code></li>"
                      for k, e in report["edits"].items())
    explain = ("<p>forget = mean answer probability over the forms (fact targets) or the True-LOO probe accuracy at "
               "the signature's peak depth, where the unedited gap is largest (pool targets; 0.5 = chance); lower "
               "is more forgotten. LOO P(known): a logistic probe on the residual stream (known vs invented "
               "entities, the forget subjects left out of its training) re-fitted on the edited model — the "
               "probability it gives the forget subjects of being known (0.5 = indistinguishable). Time ratio: "
               "this edit's seconds over the fastest baseline reaching at least the same forget level; for a "
               "trained baseline, its training seconds up to the first tracked step at that level (monitoring "
               "excluded), with its neighbours there.</p>")
    cmd = report.get("command") or "repedit run <recipe.toml>"
    refused = "".join(f"<p><b>{html.escape(k)}</b> ({html.escape(e['method'])}) was refused and not measured: "
                      f"{html.escape(e['error'])}</p>" for k, e in report.get("refused", {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>repedit run {html.escape(r['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}}th{{background:#f3f3f3}}
img{{max-width:100%;margin:0.5em 0}}code{{font-size:12px}}</style></head><body>
<h1>repedit run: {html.escape(r['name'])}</h1>
<h2>What was edited</h2>{what}<ul>{methods}</ul>{refused}
<h2>Comparison</h2>{explain}{_table(report['comparison'], columns(report['comparison']))}
{_forms_table(report)}
{_lm_eval_table(report)}
{benchmark_section(report, _table)}
<h2>Plots</h2>{''.join(_plots(report, run_dir))}
{_attack_tables(report)}
{recovery_section(report, run_dir)}
<h2>Reproduce</h2><pre>{html.escape(cmd)}</pre><p>Same seed, same machine type → the same numbers
(report.json). Environment: <code>{html.escape(json.dumps(report['environment']))}</code>; wall time
{report['wall_seconds']} s.</p></body></html>"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path
