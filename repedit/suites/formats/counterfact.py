"""CounterFact (Meng et al. 2022, ROME's counterfact.json) and zsRE (as MEND / ROME publish it,
zsre_mem_eval.json): knowledge-editing records with the prompts their efficacy, generalisation and
specificity are measured on. Each file is a JSON list (or JSON lines, or parquet) of records:

CounterFact  {"case_id", "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject",
              "relation_id", "target_true": {"str"}, "target_new": {"str"}}, "paraphrase_prompts": [...],
              "neighborhood_prompts": [...], (attribute_prompts, generation_prompts: not used)}
zsRE         {"subject", "src" (question), "answers": [true answers], "rephrase" (paraphrased question),
              "alt" (the new answer), "loc" ("nq question: …"), "loc_ans", (pred, cond: not used)}

Every record becomes a repedit fact (the true answer is what an erasure removes); the benchmark's metrics
read the prompts (`repedit.verify.benchmarks`).
"""

from __future__ import annotations

from pathlib import Path

from repedit.suites.formats import Benchmark, BenchmarkFormatError, read_rows
from repedit.suites.formats.facts import question_facts, statement_facts


def _file(path: Path, fmt: str) -> Path:
    if path.is_dir():
        raise BenchmarkFormatError(f"{fmt}: give the records file (e.g. {fmt}.json), not the folder {str(path)!r}")
    return path


def load_counterfact(path: Path, split: str = "", limit: int | None = None) -> Benchmark:
    path = _file(path, "counterfact")
    rows = read_rows(path, "counterfact", ("case_id", "requested_rewrite", "paraphrase_prompts",
                                           "neighborhood_prompts"))[:limit]
    items = []
    for i, r in enumerate(rows):
        rw = r["requested_rewrite"] or {}
        need = [k for k in ("prompt", "subject", "target_true", "target_new") if not rw.get(k)]
        if need or "{}" not in rw.get("prompt", ""):
            raise BenchmarkFormatError(f"counterfact: {str(path)!r} record {i + 1} (case_id {r['case_id']}): "
                                       f"requested_rewrite needs prompt (with '{{}}' for the subject), subject, "
                                       f"target_true and target_new; missing {need or ['{} in prompt']}")
        true, new = rw["target_true"]["str"], rw["target_new"]["str"]
        items.append({"id": f"counterfact/{r['case_id']}", "subject": rw["subject"],
                      "relation": rw.get("relation_id") or "counterfact", "prompt": rw["prompt"].format(rw["subject"]),
                      "answer": true, "target_new": new, "wrong": [new],
                      "paraphrase": (r["paraphrase_prompts"] or [None])[0],
                      "paraphrase_prompts": list(r["paraphrase_prompts"] or []),
                      "neighborhood_prompts": list(r["neighborhood_prompts"] or []), "source": "CounterFact"})
    facts = statement_facts(items, "counterfact")
    return Benchmark("counterfact", str(path), split or "records", tuple(facts), (), {"records": items}, path.name)


def load_zsre(path: Path, split: str = "", limit: int | None = None) -> Benchmark:
    path = _file(path, "zsre")
    rows = read_rows(path, "zsre", ("subject", "src", "answers", "rephrase", "loc", "loc_ans"), ("alt",))[:limit]
    items = []
    for i, r in enumerate(rows):
        answers = [a for a in (r["answers"] if isinstance(r["answers"], list) else [r["answers"]]) if a]
        if not answers:
            raise BenchmarkFormatError(f"zsre: {str(path)!r} record {i + 1}: answers is empty")
        items.append({"id": f"zsre/{i}", "subject": r["subject"], "question": r["src"], "answer": answers[0],
                      "aliases": answers[1:], "paraphrased_question": r["rephrase"], "target_new": r.get("alt"),
                      "loc": r["loc"], "loc_ans": r["loc_ans"], "source": "zsRE"})
    facts = question_facts(items, "zsre", "zsre")
    return Benchmark("zsre", str(path), split or "records", tuple(facts), (), {"records": items}, path.name)
