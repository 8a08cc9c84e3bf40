"""The recovery attacks' section of a run's report: a table and one plot per attack (quantisation,
weight diff, white-box extraction, membership inference, REMIND)."""

from __future__ import annotations

import html
from pathlib import Path

NOTES = {
    "quantisation": "Each edited model quantised (weights only) and dequantised. recovered = share of the erased "
                    "answer probability (mean over forms) that comes back: (P_q(edited) − P(edited)) / (P(original) "
                    "− P(edited)); vs quantised original: over what the quantised original still knows. Survival: "
                    "share of each weight's change still present after quantisation (1 = intact).",
    "weight_diff": "An attacker with base and edited weights reads the top singular directions of each change. "
                   "Ranks are the best over directions and signs (0 = first guess); control = the same read-out "
                   "of random directions; keys = rank of the forget subject among the run's subjects by what the "
                   "change reads. named = share of facts named (key rank 0, or a token rank < 50 and < a tenth "
                   "of its control).",
    "extraction": "Answer's first token read at every layer of the blank prompt through the logit lens and a "
                  "least-squares tuned lens (fitted on clean text on the model attacked). any layer = share of "
                  "facts in the top-10 at some layer before the last; recovered = share of the facts erased at "
                  "the output that are still in the top-10 at an intermediate layer (Patil et al. 2024: 38 % "
                  "after ROME deletion).",
    "membership": "Forget facts as members vs retain facts as non-members: ROC AUC of each score (higher = "
                  "member). Before the edit both are known (≈ 0.5); an edit that leaves the forget facts "
                  "conspicuous moves the AUC away from 0.5 in either direction. PrivLeak against 0.5 (no "
                  "retrained reference for real models; the toy test bed has one).",
    "remind": "REMIND: loss over single-token semantic-neighbour substitutions of each item. AUC = how well "
              "flatness (low sharpness) tells forget from retain items; > 0.5 flags residual memorisation.",
}


def _quant_rows(edits: dict) -> list[dict]:
    rows = []
    for name, e in edits.items():
        q = e.get("attacks", {}).get("quantisation")
        for scheme, r in (q or {}).get("recovered", {}).items():
            surv = [s["survival"] for s in q["survival"].get(scheme, {}).values() if s["survival"] is not None]
            rows.append({"edit": name, "scheme": scheme, "forget": r["forget"], "recovered": r["recovered"],
                         "vs_quant": r["recovered_vs_quant"], "neighbours": r["neighbours"],
                         "survival": min(surv) if surv else None})
    return rows


def _plot_bars(plt, labels: list[str], series: dict[str, list], ylabel: str, title: str, path: Path,
               ref: float | None = None, ref_label: str = "") -> str:
    from repedit.recipes.report import _finish

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) * max(1, len(series)) / 2), 3.4))
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(labels))], [v if v is not None else 0.0 for v in vals], width,
               label=name)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, rotation=20, fontsize=8)
    return _finish(plt, fig, ax, ref, ref_label, "", ylabel, title, path)


def recovery_section(report: dict, run_dir: Path) -> str:
    """HTML of the recovery attacks that ran (empty if none)."""
    from repedit.plots import _pyplot
    from repedit.recipes.report import _finish
    from repedit.recipes.report import _table as table

    edits, before, parts = report["edits"], report["before"], []
    plots = Path(run_dir) / "plots"
    att = {k: e.get("attacks", {}) for k, e in edits.items()}
    head = lambda key, title: f"<h2>{title}</h2><p>{html.escape(NOTES[key])}</p>"  # noqa: E731
    qrows = _quant_rows(edits)
    if qrows:
        schemes = list(dict.fromkeys(r["scheme"] for r in qrows))
        series = {n: [next((r["recovered"] for r in qrows if r["edit"] == n and r["scheme"] == s), None)
                      for s in schemes] for n in edits if any(r["edit"] == n for r in qrows)}
        parts.append(head("quantisation", "Quantisation attack") + table(qrows, [
            ("edit", "edit"), ("scheme", "scheme"), ("forget", "forget, quantised"), ("recovered", "recovered"),
            ("vs_quant", "recovered vs quantised original"), ("neighbours", "neighbours, quantised"),
            ("survival", "min survival of a weight's change")]) + _plot_bars(
            _pyplot(), schemes, series, "recovered share", "erased probability recovered by quantisation",
            plots / "quantisation.png", ref=0.0, ref_label="nothing recovered"))
    wd = {k: a["weight_diff"]["summary"] for k, a in att.items() if "weight_diff" in a}
    if wd:
        rows = [{"edit": k, **s} for k, s in wd.items()]
        parts.append(head("weight_diff", "Weight-diff attack") + table(rows, [
            ("edit", "edit"), ("named_share", "named"), ("subject_keys_median_rank", "subject key rank"),
            ("subject_patch_median_rank", "subject, patched"), ("subject_patch_control_median_rank", "control"),
            ("answer_patch_median_rank", "answer, patched"), ("answer_patch_control_median_rank", "control"),
            ("subject_vocab_median_rank", "subject, logit lens"), ("answer_vocab_median_rank", "answer, logit lens"),
            ("answer_vocab_control_median_rank", "control")]) + _plot_bars(
            _pyplot(), list(wd), {"subject key rank": [s["subject_keys_median_rank"] for s in wd.values()],
                                  "answer rank, patched": [s["answer_patch_median_rank"] for s in wd.values()],
                                  "its control": [s["answer_patch_control_median_rank"] for s in wd.values()]},
            "median rank (lower = exposed)", "weight-diff read-outs", plots / "weight_diff.png"))
    ex = {k: a["extraction"] for k, a in att.items() if "extraction" in a}
    if ex and before.get("extraction"):
        rows = [{"edit": k, "lens": lens, "any_before": v["any_intermediate_before"],
                 "any_after": v["any_intermediate_after"], "recovered": v["recovered_frac"],
                 "erased": len(v["erased"])}
                for k, e in ex.items() for lens, v in e["versus_original"].items() if isinstance(v, dict)]
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        tuned = lambda d: d["lenses"].get("tuned") or d["lenses"]["logit"]  # noqa: E731
        ax.plot(tuned(before["extraction"])["mean_prob"], color="black", label="unedited")
        for k, e in ex.items():
            ax.plot(tuned(e)["mean_prob"], label=k)
        parts.append(head("extraction", "White-box extraction") + table(rows, [
            ("edit", "edit"), ("lens", "lens"), ("erased", "facts erased at the output"),
            ("recovered", "recovered from an intermediate layer"), ("any_before", "any layer, before"),
            ("any_after", "any layer, after")]) + _finish(
            plt, fig, ax, None, "", "layer", "answer probability (tuned lens)",
            "white-box extraction: the answer at every layer", plots / "extraction.png"))
    mia = {k: a["membership"] for k, a in att.items() if "membership" in a}
    if mia and before.get("membership"):
        states = {"before": before["membership"], **mia}
        scores = list(before["membership"]["auc"])
        rows = [{"state": k, **{f"auc_{s}": m["auc"][s] for s in scores}, "privleak": m["privleak"]["min_k_pp"]}
                for k, m in states.items()]
        parts.append(head("membership", "Membership inference") + table(rows, [
            ("state", "model"), *((f"auc_{s}", f"AUC {s}") for s in scores), ("privleak", "PrivLeak (min-k++)")])
            + _plot_bars(_pyplot(), scores, {k: [m["auc"][s] for s in scores] for k, m in states.items()},
                         "AUC forget vs retain", "membership inference", plots / "membership.png", ref=0.5,
                         ref_label="indistinguishable"))
    rem = {k: a["remind"] for k, a in att.items() if "remind" in a}
    if rem and before.get("remind"):
        states = {"before": before["remind"], **rem}
        rows = [{"state": k, "auc": r["auc"], "loss_auc": r["loss_auc"], "forget_sharp": r["forget"]["sharpness"],
                 "retain_sharp": r["retain"]["sharpness"]} for k, r in states.items()]
        parts.append(head("remind", "REMIND (input loss landscape)") + table(rows, [
            ("state", "model"), ("auc", "flatness AUC"), ("loss_auc", "loss AUC"),
            ("forget_sharp", "forget sharpness"), ("retain_sharp", "retain sharpness")]) + _plot_bars(
            _pyplot(), list(states), {"forget": [r["forget_sharp"] for r in rows],
                                      "retain": [r["retain_sharp"] for r in rows]},
            "mean |Δ loss| under perturbation", "REMIND sharpness", plots / "remind.png"))
    return "".join(parts)
