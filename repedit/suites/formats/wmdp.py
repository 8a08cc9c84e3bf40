"""WMDP (Li et al. 2024, cais/wmdp): four-way multiple-choice questions on hazardous knowledge, one file
per domain (wmdp-bio, wmdp-chem, wmdp-cyber; .parquet as published, or .json / .jsonl):

    {"question": str, "choices": [4 strings], "answer": int (index of the right choice)}

Give a file, or a folder of such files (`split` picks one by stem, e.g. "wmdp-bio"; default: all). Each
question becomes a repedit fact whose answer is the right choice's text and whose mc form offers the four
choices; the benchmark's own accuracy is scored lm-eval style (letters A–D after the listed choices).
An optional `retain.*` file in the same format (e.g. an MMLU subset) in the folder gives retain facts.
"""

from __future__ import annotations

from pathlib import Path

from repedit.suites.formats import EXTENSIONS, Benchmark, BenchmarkFormatError, proper_names, read_rows
from repedit.suites.formats.facts import question_facts

FIELDS = ("question", "choices", "answer")


def _items(rows: list[dict], domain: str, path: Path) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        choices, k = [str(c) for c in r["choices"]], r["answer"]
        if not isinstance(k, int) or not 0 <= k < len(choices) or len(choices) < 2:
            raise BenchmarkFormatError(f"wmdp: {str(path)!r} row {i + 1}: answer must index choices "
                                       f"(0..{len(choices) - 1}), got {k!r}")
        q = r["question"].strip()
        subject = (proper_names(q) or [" ".join(q.split()[:4])])[0]
        out.append({"id": f"wmdp/{domain}/{i}", "subject": subject, "question": q, "answer": choices[k],
                    "choices": choices, "answer_index": k, "domain": domain,
                    "wrong": [c for j, c in enumerate(choices) if j != k],
                    "source": f"WMDP {domain} (subject derived: the question's longest proper name or first words)"})
    return out


def load(path: Path, split: str = "", limit: int | None = None) -> Benchmark:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in EXTENSIONS and p.stem != "retain")
        if split:
            files = [p for p in files if p.stem == split or p.stem.split("-")[0] == split]
        if not files:
            raise BenchmarkFormatError(f"wmdp: no question file{f' named {split!r}' if split else ''} in "
                                       f"{str(path)!r} (.parquet/.json/.jsonl with {list(FIELDS)})")
    else:
        files = [path]
    forget_items, read = [], []
    for f in files:
        domain = f.stem.split("-00")[0]                # wmdp-bio-00000-of-00001.parquet -> wmdp-bio
        forget_items += _items(read_rows(f, "wmdp", FIELDS), domain, f)[:limit]
        read.append(f.name)
    retain_items = []
    retain_file = next((path / f"retain{e}" for e in EXTENSIONS if path.is_dir() and (path / f"retain{e}").is_file()),
                       None)
    if retain_file:
        retain_items = _items(read_rows(retain_file, "wmdp", FIELDS), "retain", retain_file)[:limit]
        read.append(retain_file.name)
    forget = question_facts(forget_items, "wmdp", "wmdp")
    retain = question_facts(retain_items, "wmdp", "wmdp-retain") if retain_items else []
    return Benchmark("wmdp", str(path), split or "all", tuple(forget), tuple(retain),
                     {"forget": forget_items, "retain": retain_items}, ", ".join(read))
