"""Standard unlearning and editing benchmarks read from files a user already has (nothing is downloaded):
TOFU, MUSE, WMDP, CounterFact and ZsRE in their published formats, loaded with `datasets` from JSON,
JSON lines or parquet. Each loader returns a `Benchmark`: the forget and retain splits as repedit facts
(five forms each, built from the benchmark's own fields, so every repedit measure and attack runs on
them) and the items the benchmark's own metrics need (`repedit.verify.benchmarks` scores them).

    bench = load_benchmark("tofu", "data/tofu", split="forget01")
    bench.forget[0].forms["qa"]["prompt"], bench.items["forget"][0]["perturbed_answer"]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from repedit.errors import InputError, SuiteNotFoundError, close_matches

EXTENSIONS = (".json", ".jsonl", ".parquet")


class BenchmarkFormatError(InputError):
    """A benchmark file is missing or not in its published format (the message names file, field and fix)."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's targets: forget/retain facts (repedit's five forms) and the metric items."""

    format: str
    path: str
    split: str
    forget: tuple                    #: repedit Facts of the forget split (the targets)
    retain: tuple                    #: repedit Facts of the retain split (may be empty)
    items: dict = field(default_factory=dict)   #: format-specific evaluation items (lists of plain dicts)
    source: str = ""                 #: the files read, for reports

    def select(self, subjects: Sequence[str] = ()) -> tuple[list, list]:
        """(forget facts, retain candidates): the whole forget split, or its facts about `subjects`
        (every fact of each); the forget split's other facts come first among the retain candidates."""
        if not subjects:
            return list(self.forget), list(self.retain)
        by: dict[str, list] = {}
        for f in self.forget:
            by.setdefault(f.subject, []).append(f)
        bad = [s for s in subjects if s not in by]
        if bad:
            raise InputError(f"{bad[0]!r} is not a subject of the {self.format} forget split (close: "
                             f"{close_matches(bad[0], by, 3)}); valid: {sorted(by)[:12]}")
        chosen = [f for s in dict.fromkeys(subjects) for f in by[s]]
        ids = {f.id for f in chosen}
        return chosen, [f for f in self.forget if f.id not in ids] + list(self.retain)

    def to_dict(self) -> dict:
        return {"format": self.format, "path": self.path, "split": self.split, "forget": len(self.forget),
                "retain": len(self.retain), "items": {k: len(v) for k, v in self.items.items()},
                "source": self.source}


def find_file(folder: Path, stem: str, fmt: str, required: bool = True) -> Path | None:
    """`folder/stem` with one of the published extensions (.json, .jsonl, .parquet)."""
    for ext in EXTENSIONS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    if required:
        have = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
        raise BenchmarkFormatError(f"{fmt}: no {stem}.json/.jsonl/.parquet in {str(folder)!r} (has: {have[:12]}); "
                                   f"see `repedit.suites.formats.{fmt}` for the files the format needs")
    return None


def read_rows(path: Path, fmt: str, fields: Sequence[str], optional: Sequence[str] = ()) -> list[dict]:
    """Rows of a JSON / JSON-lines / parquet file through `datasets` (local files only), checked for
    `fields`; extra columns are kept, missing required ones raise `BenchmarkFormatError`."""
    try:
        from datasets import load_dataset
    except ImportError as exc:                       # pragma: no cover - datasets comes with sae-lens
        raise BenchmarkFormatError("reading benchmark files needs `datasets` (pip install datasets)") from exc
    kind = "parquet" if path.suffix == ".parquet" else "json"
    try:
        ds = load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:                         # datasets raises many kinds for a malformed file
        raise BenchmarkFormatError(f"{fmt}: cannot read {str(path)!r} as {kind} ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); the format: `repedit.suites.formats.{fmt}`") from exc
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise BenchmarkFormatError(f"{fmt}: {str(path)!r} lacks field(s) {missing} (has {ds.column_names}; "
                                   f"did you mean {close_matches(missing[0], ds.column_names, 2)}?); the "
                                   f"published format has {list(fields) + list(optional)}")
    rows = ds.to_list()
    for i, r in enumerate(rows):
        for f in fields:
            if r[f] is None or (isinstance(r[f], str) and not r[f].strip()):
                raise BenchmarkFormatError(f"{fmt}: {str(path)!r} row {i + 1}: field {f!r} is empty")
    return rows


_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:[A-Z][\w'’.-]*|de|van|von|al|el|bin|da|di|du|la|le)){0,4}")
_STOP = {"What", "Who", "Where", "When", "Which", "How", "Why", "Is", "Are", "Did", "Does", "Do", "Can", "In",
         "The", "A", "An", "Has", "Have", "Was", "Were", "Could", "Would", "Question", "Answer", "If", "As"}


def proper_names(text: str) -> list[str]:
    """Capitalised word runs (2+ words first, then single words), question words stripped."""
    out = []
    for m in _NAME.finditer(text):
        words = m.group(0).rstrip(".’'").split()
        while words and words[0] in _STOP:
            words = words[1:]
        if words:
            out.append(" ".join(words).removesuffix("'s").removesuffix("’s"))
    return sorted(out, key=lambda s: -len(s.split()))


def derive_subject(texts: Sequence[str]) -> str | None:
    """The entity a group of questions is about: the most frequent multi-word proper name across
    them (then the most frequent single one); None when there is none."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(set(proper_names(t)))
    if not counts:
        return None
    return max(counts, key=lambda s: (counts[s] > 1 or len(texts) == 1, len(s.split()) > 1, counts[s], len(s)))


def load_benchmark(fmt: str, path: str | Path, split: str = "", limit: int | None = None) -> Benchmark:
    """The benchmark `fmt` (tofu | muse | wmdp | counterfact | zsre) from `path` (a folder or a file,
    by format); `split` is format-specific (TOFU: forget01/05/10); `limit` caps items per split."""
    from repedit.suites.formats import counterfact, muse, tofu, wmdp

    loaders = {"tofu": tofu.load, "muse": muse.load, "wmdp": wmdp.load, "counterfact": counterfact.load_counterfact,
               "zsre": counterfact.load_zsre}
    if fmt not in loaders:
        raise InputError(f"unknown benchmark format {fmt!r}; valid: {sorted(loaders)} "
                         f"(did you mean {close_matches(fmt, loaders, 2)}?)")
    p = Path(path).expanduser()
    if not p.exists():
        raise SuiteNotFoundError(f"{fmt}: no such file or folder {str(p)!r}; give the folder (TOFU, MUSE) or file "
                                 "(WMDP, CounterFact, ZsRE) you have locally; nothing is downloaded")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    stamp = max((q.stat().st_mtime_ns for q in ([p] + list(p.rglob("*")) if p.is_dir() else [p]) if q.is_file()),
                default=0)
    return _load(loaders[fmt], str(p.resolve()), split, limit, stamp)


@lru_cache(maxsize=8)
def _load(loader, path: str, split: str, limit: int | None, stamp: int) -> Benchmark:
    """One read per file version (a recipe is checked when parsed and resolved when run)."""
    return loader(Path(path), split, limit)


FORMATS = ("tofu", "muse", "wmdp", "counterfact", "zsre")
