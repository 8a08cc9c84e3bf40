"""Facts and pools from your own JSONL or CSV files, read and validated. The record format and how missing
forms are generated: `repedit.suites.records`; relation templates: `repedit.suites.templates`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from repedit.errors import InputError, close_matches
from repedit.suites.records import (
    DEFAULT_RELATION,
    FORMS,
    GENERIC,
    PROMPT_FORMS,
    RECORD_KEYS,
    RecordError,
    facts_from_records,
    forms_missing_subject,
)
from repedit.suites.templates import check_templates, merge_templates

__all__ = ["DEFAULT_RELATION", "FORMS", "GENERIC", "POOL_KEYS", "PROMPT_FORMS", "RECORD_KEYS", "SUFFIXES",
           "RecordError", "check_templates", "facts_from_records", "forms_missing_subject", "is_path", "load_facts",
           "pool_records", "read_pool_records", "read_records", "read_text"]

POOL_KEYS = ("key", "memorised", "paraphrase_c", "paraphrase_b", "source")
SUFFIXES = (".jsonl", ".csv")


def is_path(name_or_path: str) -> bool:
    """A file path (ends in .jsonl/.csv or holds a '/') rather than a built-in suite or pool name."""
    s = str(name_or_path)
    return s.endswith(SUFFIXES) or "/" in s or "\\" in s


def read_text(path: Path) -> str:
    """A file's text; InputError naming the file and the line when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as "
                         "UTF-8") from exc


def _csv_rows(path: Path):
    """(row, line number) of a CSV file with a header row (csv.DictReader); InputError at the bad line."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        for row in reader:
            yield row, reader.line_num
    except csv.Error as exc:                      # the line that fails is not counted yet
        raise InputError(f"{path}:{reader.line_num + 1}: not valid CSV ({exc}); quote cells holding commas or "
                         f"newlines, and keep each cell under {csv.field_size_limit()} characters") from exc


def _json_line(path: Path, i: int, line: str):
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:    # JSONDecodeError, numbers past Python's digit limit, deep nesting
        raise InputError(f"{path}:{i}: not valid JSON ({exc}); one object per line") from exc


def read_records(path: str | Path) -> tuple[list[dict], list[str], dict]:
    """(records, where each came from "file:line", templates from the file) of a JSONL or CSV file.
    CSV: a header row; empty cells are absent; `aliases` and `mc_options` are `|`-separated."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a .jsonl or .csv file (see probes/facts/README.md)")
    if path.suffix not in SUFFIXES:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; valid: {list(SUFFIXES)}")
    records, wheres, templates = [], [], {}
    if path.suffix == ".csv":
        if not read_text(path).strip():
            raise InputError(f"{path}: empty CSV file; the first row names the columns, e.g. subject,answer,prompt")
        for row, line_num in _csv_rows(path):
            if None in row:
                raise InputError(f"{path}:{line_num}: more cells than columns (quote cells holding commas)")
            rec = {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}
            for key in ("aliases", "mc_options"):
                if key in rec:
                    rec[key] = [a.strip() for a in rec[key].split("|") if a.strip()]
            if rec:
                records.append(rec)
                wheres.append(f"{path}:{line_num}")
        return records, wheres, templates
    for i, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        d = _json_line(path, i, line)
        if not isinstance(d, dict):
            raise InputError(f"{path}:{i}: a line must be a JSON object, got {type(d).__name__}")
        if "templates" in d:
            try:
                merge_templates(templates, check_templates(d["templates"]))
            except InputError as exc:
                raise InputError(f"{path}:{i}: {exc}") from exc
            d = {k: v for k, v in d.items() if k != "templates"}
            if not d:
                continue
        records.append(d)
        wheres.append(f"{path}:{i}")
    return records, wheres, templates


def load_facts(path: str | Path, templates: Mapping | None = None):
    """The facts of a JSONL or CSV file (full or minimal records); `templates` (relation → {qa, blank,
    paraphrase, shot}) override the file's and the built-in relations'."""
    records, wheres, file_templates = read_records(path)
    return facts_from_records(records, merge_templates(file_templates, check_templates(templates or {})),
                              origin=Path(path).name, wheres=wheres)


# ----- pools ------------------------------------------------------------------------------------------------
def pool_records(records: Sequence[Mapping], wheres: Sequence[str] | None = None) -> list[dict]:
    """Validated pool records: key, memorised, paraphrase_c, paraphrase_b (non-empty strings), source
    (optional); at least 3 distinct keys (leave-one-key-out)."""
    wheres = list(wheres) if wheres is not None else [f"pool key {i + 1}" for i in range(len(records))]
    out, seen = [], {}
    for i, (d, where) in enumerate(zip(records, wheres)):
        if not isinstance(d, Mapping):
            raise RecordError(f"{where}: a pool key must be a table/object, got {d!r}", i)
        for k in d:
            if k not in POOL_KEYS:
                raise RecordError(f"{where}: unknown key {k!r}; valid: {list(POOL_KEYS)} "
                                  f"(did you mean {close_matches(str(k), POOL_KEYS, 2)}?)", i, k)
        rec = {}
        for k in POOL_KEYS[:4]:
            v = d.get(k)
            if not isinstance(v, str) or not v.strip():
                raise RecordError(f"{where}: {k} must be a non-empty string (a pool key needs key, memorised — the "
                                  f"memorised text — and its paraphrases paraphrase_c, paraphrase_b), got {v!r}", i, k)
            rec[k] = v.strip()
        rec["source"] = str(d.get("source", ""))
        if rec["key"] in seen:
            raise RecordError(f"{where}: duplicate key {rec['key']!r} (also {seen[rec['key']]})", i, "key")
        seen[rec["key"]] = where
        out.append(rec)
    if len(out) < 3:
        raise InputError(f"a pool needs at least 3 keys (leave-one-key-out), got {len(out)}; add keys")
    return out


def read_pool_records(path: str | Path) -> list[dict]:
    """Validated pool records of a JSONL or CSV file (columns: key, memorised, paraphrase_c, paraphrase_b, source)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a .jsonl or .csv pool file (see probes/memorised/README.md)")
    if path.suffix not in SUFFIXES:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; valid: {list(SUFFIXES)}")
    rows, wheres = [], []
    if path.suffix == ".csv":
        for row, line_num in _csv_rows(path):
            rows.append({k.strip(): v.strip() for k, v in row.items() if k is not None and v and v.strip()})
            wheres.append(f"{path}:{line_num}")
    for i, line in enumerate(read_text(path).splitlines() if path.suffix == ".jsonl" else (), 1):
        if line.strip():
            rows.append(_json_line(path, i, line))
            wheres.append(f"{path}:{i}")
    try:
        return pool_records(rows, wheres)
    except RecordError:
        raise
    except InputError as exc:          # too few keys: name the file
        raise InputError(f"{path}: {exc}") from exc
