"""MUSE (Shi et al. 2024, muse-bench/MUSE-News and MUSE-Books): six-way unlearning evaluation; repedit
reads the three parts a model is judged on, from a folder laid out like the published configs
(each file .json — a list or JSON lines — .jsonl or .parquet):

    knowmem/forget_qa.json, knowmem/retain_qa.json          {"question", "answer"}   (forget_qa required)
    knowmem/forget_qa_icl.json, knowmem/retain_qa_icl.json  {"question", "answer"}   in-context examples
    verbmem/forget.json                                     {"prompt", "gt"}          verbatim continuation
    privleak/forget.json, privleak/retain.json, privleak/holdout.json   {"text"}    membership inference

The forget and retain knowledge questions become repedit facts (subject: the question's longest proper
name, derived); verbatim prompts and privacy texts feed MUSE's VerbMem, KnowMem and PrivLeak.
"""

from __future__ import annotations

from pathlib import Path

from repedit.suites.formats import Benchmark, BenchmarkFormatError, find_file, proper_names, read_rows
from repedit.suites.formats.facts import question_facts


def _qa(rows: list[dict], prefix: str) -> list[dict]:
    return [{"id": f"muse/{prefix}/{i}", "subject": (proper_names(r["question"]) or [r["question"].split("?")[0]])[0],
             "question": r["question"], "answer": str(r["answer"]),
             "source": f"MUSE knowmem {prefix} (subject derived: the question's longest proper name)"}
            for i, r in enumerate(rows)]


def load(folder: Path, split: str = "", limit: int | None = None) -> Benchmark:
    if folder.is_file():
        raise BenchmarkFormatError(f"muse: give the folder holding knowmem/, verbmem/ and privleak/, not the file "
                                   f"{str(folder)!r}")
    items, read = {}, []
    for sub, stem, key, fields in (("knowmem", "forget_qa", "forget_qa", ("question", "answer")),
                                   ("knowmem", "retain_qa", "retain_qa", ("question", "answer")),
                                   ("knowmem", "forget_qa_icl", "forget_icl", ("question", "answer")),
                                   ("knowmem", "retain_qa_icl", "retain_icl", ("question", "answer")),
                                   ("verbmem", "forget", "verbmem", ("prompt", "gt")),
                                   ("privleak", "forget", "privleak_forget", ("text",)),
                                   ("privleak", "retain", "privleak_retain", ("text",)),
                                   ("privleak", "holdout", "privleak_holdout", ("text",))):
        p = find_file(folder / sub, stem, "muse", required=key == "forget_qa")
        if p:
            rows = read_rows(p, "muse", fields)
            items[key] = (_qa(rows, stem) if stem.endswith("_qa") else rows)[:limit]
            read.append(f"{sub}/{p.name}")
    if ("privleak_forget" in items) != ("privleak_holdout" in items):
        raise BenchmarkFormatError("muse: PrivLeak compares privleak/forget with privleak/holdout; give both files")
    forget = question_facts(items["forget_qa"], "muse", "muse-knowmem")
    retain = question_facts(items["retain_qa"], "muse", "muse-knowmem") if "retain_qa" in items else []
    return Benchmark("muse", str(folder), split or "knowmem", tuple(forget), tuple(retain), items, ", ".join(read))
