"""The benchmark section of a run's report: its headline numbers before and after each edit."""

from __future__ import annotations

import html

NOTES = {"tofu": "TOFU (Maini et al. 2024): probability, ROUGE-L recall and truth ratio on the forget set; forget "
                 "quality = KS-test p-value of the forget truth ratios against the retain model's (only with a "
                 "reference); ks_vs_original = the same test against the original model (1 = unmoved); model "
                 "utility = harmonic mean of retain / real-authors / world-facts probability, ROUGE and truth ratio.",
         "muse": "MUSE (Shi et al. 2024): VerbMem = ROUGE-L F1 of verbatim continuations; KnowMem = ROUGE-L F1 "
                 "of answers after in-context examples; PrivLeak = relative Min-K% membership AUC vs the retain "
                 "model (0.5 without one), near 0 is ideal.",
         "wmdp": "WMDP (Li et al. 2024): zero-shot multiple-choice accuracy, lm-eval's prompt (chance 0.25).",
         "counterfact": "CounterFact (Meng et al. 2022), scored on greedy generations (no teacher forcing): "
                        "efficacy / generalisation = rewrite / paraphrase prompts that no longer say the true "
                        "answer; efficacy_new = that say the counterfactual one; specificity = neighbourhood "
                        "prompts that still say theirs.",
         "zsre": "zsRE, scored on greedy generations: efficacy / generalisation = questions / rephrasings no "
                 "longer answered truly; specificity = unrelated questions answered as the original model did."}


def benchmark_rows(report: dict) -> tuple[list[dict], list[str]]:
    from repedit.verify.benchmarks import headline

    before = report["before"].get("benchmark")
    if not before:
        return [], []
    rows = [{"model": "before", **headline(before)}]
    rows += [{"model": k, **headline(e["after"].get("benchmark"))} for k, e in report["edits"].items()]
    return rows, [c for c in rows[0] if c != "model"]


def benchmark_section(report: dict, table) -> str:
    rows, cols = benchmark_rows(report)
    if not rows:
        return ""
    fmt = report["before"]["benchmark"]["format"]
    src = report["targets"].get("benchmark") or {}
    return (f"<h2>Benchmark: {html.escape(fmt)}</h2><p>{html.escape(NOTES.get(fmt, ''))} Files: "
            f"{html.escape(str(src.get('source', '')))}.</p>" + table(rows, [("model", "model")] + [(c, c)
                                                                                                for c in cols]))
