"""TOFU (Maini et al. 2024, locuslab/TOFU): question–answer pairs about 200 fictitious authors, 20 per
author in order. The published files (JSON lines; .json, .jsonl or .parquet here) in one folder:

    forget01.json / forget05.json / forget10.json          {"question", "answer"}
    forget01_perturbed.json (…05, …10)                      + "paraphrased_answer", "paraphrased_question",
                                                              "perturbed_answer" (a list of wrong answers)
    retain_perturbed.json                                   same fields, the retain set the metrics use
    real_authors_perturbed.json, world_facts_perturbed.json {"question", "answer", "perturbed_answer"}
    retain90.json / retain95.json / retain99.json           {"question", "answer"} (optional)

Only `<split>.json` is required; the others add the forget-quality and model-utility metrics. The
subject of a fact is its author: the most frequent proper name in its block of 20 questions and
answers (TOFU has no subject field; each fact's `source` says it was derived).
"""

from __future__ import annotations

from pathlib import Path

from repedit.suites.formats import (
    Benchmark,
    BenchmarkFormatError,
    derive_subject,
    find_file,
    proper_names,
    read_rows,
)
from repedit.suites.formats.facts import question_facts

SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
PER_AUTHOR = 20
PERTURBED = ("question", "answer", "paraphrased_answer", "perturbed_answer")


def _items(rows: list[dict], prefix: str, per_author: int | None) -> list[dict]:
    """Rows → items with id, subject (per author block, or per question) and the metric fields."""
    out, subjects = [], {}
    for i, r in enumerate(rows):
        block = i // per_author if per_author else i
        if block not in subjects:
            group = rows[block * per_author:(block + 1) * per_author] if per_author else [r]
            texts = [f"{g['question']} {g['answer']}" for g in group] if per_author else [r["question"]]
            subjects[block] = derive_subject(texts) or (proper_names(r["question"]) or [f"{prefix} {block}"])[0]
        wrong = r.get("perturbed_answer") or []
        if isinstance(wrong, str):
            wrong = [wrong]
        out.append({"id": f"tofu/{prefix}/{i}", "subject": subjects[block], "question": r["question"],
                    "answer": r["answer"], "paraphrased_question": r.get("paraphrased_question"),
                    "paraphrased_answer": r.get("paraphrased_answer") or r["answer"], "perturbed_answer": list(wrong),
                    "wrong": list(wrong), "source": f"TOFU {prefix} (subject derived: the block's most frequent name)"})
    return out


def load(folder: Path, split: str = "", limit: int | None = None) -> Benchmark:
    split = split or "forget01"
    if split not in SPLITS:
        raise BenchmarkFormatError(f"tofu: split {split!r} is not one of {sorted(SPLITS)}")
    if folder.is_file():
        raise BenchmarkFormatError(f"tofu: give the folder holding {split}.json and the *_perturbed files, "
                                   f"not the file {str(folder)!r}")
    pert = find_file(folder, f"{split}_perturbed", "tofu", required=False)
    forget_rows = (read_rows(pert, "tofu", PERTURBED, ("paraphrased_question",)) if pert else
                   read_rows(find_file(folder, split, "tofu"), "tofu", ("question", "answer")))
    items = {"forget": _items(forget_rows, split, PER_AUTHOR)[:limit]}
    read = [(pert or find_file(folder, split, "tofu")).name]
    for name, key, per in (("retain_perturbed", "retain", PER_AUTHOR), ("real_authors_perturbed", "real_authors", None),
                           ("world_facts_perturbed", "world_facts", None)):
        p = find_file(folder, name, "tofu", required=False)
        if p:
            rows = read_rows(p, "tofu", ("question", "answer", "perturbed_answer"), ("paraphrased_answer",))
            items[key] = _items(rows, name.removesuffix("_perturbed"), per)[:limit]
            read.append(p.name)
    retain_src = items.get("retain")
    if retain_src is None:
        p = find_file(folder, SPLITS[split], "tofu", required=False)
        if p:
            retain_src = _items(read_rows(p, "tofu", ("question", "answer")), SPLITS[split], PER_AUTHOR)[:limit]
            read.append(p.name)
    forget = question_facts(items["forget"], "tofu", "tofu-author", "person")
    retain = question_facts(retain_src, "tofu", "tofu-author", "person") if retain_src else []
    return Benchmark("tofu", str(folder), split, tuple(forget), tuple(retain), items, ", ".join(read))
