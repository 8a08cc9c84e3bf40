"""The [targets] section: its suites, pools, inline records and benchmark checked and read (relative paths
from the recipe's folder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from repedit.errors import close_matches
from repedit.recipes.checker import Checker, parse_section, string_list
from repedit.recipes.sections import BENCHMARK_KEYS, MIN_REFERENCES, SECTIONS, RecipeError, Targets

_OWN = ("retain", "forget", "pool", "facts", "templates", "pool_keys", "references", "benchmark")


def _ref(ck: Checker, value: str, key: str, folder: str, base: Path) -> str:
    """A built-in name (checked under probes/<folder>/) or a path (resolved against `base`, must exist)."""
    from repedit.suites import probes_dir
    from repedit.suites.user import is_path

    if is_path(value):
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ck.fail(f"[targets] {key}: no such file {str(path)!r} (relative paths are read from the recipe's "
                          f"folder, {str(base)!r}); valid: a built-in name or a path to a .jsonl/.csv file",
                          key, "targets")
        return str(path.resolve())
    if not (probes_dir() / folder / f"{value}.jsonl").exists():
        options = sorted(p.stem for p in (probes_dir() / folder).glob("*.jsonl"))
        what = "a suite" if folder == "facts" else "a memorised pool"
        raise ck.fail(f"[targets] {key} {value!r} is not {what}; valid: {options} "
                      f"(did you mean {close_matches(value, options, 2)}?) or a path to a .jsonl/.csv file",
                      key, "targets")
    return value


def _records(ck: Checker, value, key: str) -> tuple[dict, ...]:
    if isinstance(value, dict):
        raise ck.fail(f"write each of [targets] {key} as a [[targets.{key}]] table (double brackets)", key, "targets")
    ck.typed(value, list, key, "targets")
    for i, d in enumerate(value):
        if not isinstance(d, dict):
            raise ck.fail(f"[targets] {key} item {i + 1} must be a table, got {d!r}", f"targets.{key}",
                          f"targets.{key}", i)
    return tuple(dict(d) for d in value)


def _record_fail(ck: Checker, exc, key: str, records: tuple[dict, ...]) -> RecipeError:
    """An inline record's error, at its [[targets.<key>]] table (or the offending key inside it)."""
    from repedit.suites.records import RecordError

    if isinstance(exc, RecordError) and exc.index is not None and exc.index < len(records):
        at = exc.key if exc.key in records[exc.index] else f"targets.{key}"
        doc = "probes/facts/README.md" if key == "facts" else "probes/memorised/README.md"
        return ck.fail(f"{exc}; the format: {doc}",
                       at, f"targets.{key}", exc.index)
    return ck.fail(f"[[targets.{key}]]: {exc}", key, "targets")


def _templates(ck: Checker, value) -> dict:
    from repedit.errors import InputError
    from repedit.suites.templates import check_templates

    ck.typed(value, dict, "templates", "targets")
    for rel, t in value.items():
        try:
            check_templates({rel: t})
        except InputError as exc:
            msg = str(exc)
            key = next((k for k in (t if isinstance(t, dict) else ()) if repr(k) in msg or f"template {k} " in msg),
                       f"targets.templates.{rel}")
            raise ck.fail(f"[targets.templates.{rel}]: {msg}", key, f"targets.templates.{rel}") from exc
    return check_templates(value)


def parse_targets(ck: Checker, table: dict, base: Path) -> tuple[Targets, list]:
    """The [targets] section, and its facts (loaded, forms generated) when it forgets facts."""
    from repedit.errors import InputError, SuiteNotFoundError
    from repedit.suites import suite_facts
    from repedit.suites.user import pool_records, read_pool_records

    t = parse_section(ck, {k: v for k, v in table.items() if k not in _OWN}, "targets", Targets)
    ck.keys(table, "targets", SECTIONS["targets"])
    forget = string_list(ck, table["forget"], "forget", "targets") if "forget" in table else ()
    retain = table.get("retain", 10)
    if isinstance(retain, list):
        retain = string_list(ck, retain, "retain", "targets")
    else:
        ck.typed(retain, int, "retain", "targets")
    pool = ck.typed(table["pool"], str, "pool", "targets") if "pool" in table else None
    templates = _templates(ck, table["templates"]) if "templates" in table else {}
    facts = _records(ck, table["facts"], "facts") if "facts" in table else ()
    pool_keys = _records(ck, table["pool_keys"], "pool_keys") if "pool_keys" in table else ()
    references = string_list(ck, table["references"], "references", "targets") if "references" in table else ()
    benchmark, bench_facts = _benchmark(ck, table["benchmark"], base, forget) if "benchmark" in table else ({}, [])
    if references and len(set(references)) < MIN_REFERENCES:
        raise ck.fail(f"[targets] references needs at least {MIN_REFERENCES} distinct names (unknown entities of "
                      f"the targets' kind), got {len(set(references))}; add names or drop the key (default: invented "
                      "ones of that kind)", "references", "targets")
    if facts and "suite" in table:
        raise ck.fail("[targets] has both suite and [[targets.facts]]; give one (inline facts replace the suite)",
                      "suite", "targets")
    if facts and not forget:
        raise ck.fail("[[targets.facts]] needs [targets] forget = [subjects among them]; valid: "
                      f"{[d.get('subject') for d in facts][:8]}", "targets.facts", "targets.facts")
    suite = "" if facts else _ref(ck, t.suite, "suite", "facts", base)
    unrelated_suite = _ref(ck, t.unrelated_suite, "unrelated_suite", "facts", base)
    if pool is not None and pool_keys:
        raise ck.fail("[targets] has both pool and [[targets.pool_keys]]; give one", "pool", "targets")
    if pool is not None:
        pool = _ref(ck, pool, "pool", "memorised", base)
        if Path(pool).is_absolute():
            try:
                read_pool_records(pool)
            except InputError as exc:
                raise ck.fail(f"[targets] pool {table['pool']!r}: {exc}", "pool", "targets") from exc
    if pool_keys:
        try:
            pool_records(pool_keys, [f"[[targets.pool_keys]] {i + 1}" for i in range(len(pool_keys))])
        except InputError as exc:
            raise _record_fail(ck, exc, "pool_keys", pool_keys) from exc
    if min(t.neighbours, t.unrelated, t.contexts) < 0 or (isinstance(retain, int) and retain < 0):
        raise ck.fail("[targets] counts (retain, neighbours, unrelated, contexts) must be >= 0")
    t = dataclasses.replace(t, suite=suite, unrelated_suite=unrelated_suite, forget=forget, retain=retain, pool=pool,
                            facts=facts, templates=templates, pool_keys=pool_keys, references=references,
                            benchmark=benchmark)
    if benchmark:
        return t, bench_facts
    loaded: list = []
    if forget or facts or Path(suite).is_absolute():
        try:
            loaded = suite_facts(suite, facts, templates)
        except (InputError, SuiteNotFoundError) as exc:
            if facts:
                raise _record_fail(ck, exc, "facts", facts) from exc
            raise ck.fail(f"[targets] suite {table.get('suite', t.suite)!r}: {exc}", "suite", "targets") from exc
    if t.unrelated and Path(unrelated_suite).is_absolute():
        from repedit.suites import load_suite

        try:
            load_suite(unrelated_suite, templates=templates)
        except (InputError, SuiteNotFoundError) as exc:
            raise ck.fail(f"[targets] unrelated_suite {table['unrelated_suite']!r}: {exc}", "unrelated_suite",
                          "targets") from exc
    if forget:
        label = "the inline facts" if facts else f"suite {table.get('suite', t.suite)!r}"
        by: dict[str, list] = {}
        for f in loaded:
            by.setdefault(f.subject, []).append(f.id)
        for s in (*forget, *(retain if isinstance(retain, tuple) else ())):
            key = "forget" if s in forget else "retain"
            if s not in by:
                raise ck.fail(f"{s!r} is not a subject of {label} (close: {close_matches(s, by, 3)}); valid: the "
                              f"subjects of its facts", key, "targets")
            if len(by[s]) > 1:
                raise ck.fail(f"{s!r} is the subject of {len(by[s])} facts of {label} ({by[s]}); give them distinct "
                              "subjects (forget and retain name facts by subject)", key, "targets")
    return t, loaded


def _benchmark(ck: Checker, value, base: Path, forget: tuple[str, ...]) -> tuple[dict, list]:
    """[targets.benchmark]: checked, its path resolved, and the benchmark read (its forget facts returned)."""
    from repedit.errors import InputError, SuiteNotFoundError
    from repedit.suites.formats import FORMATS, load_benchmark

    where = "targets.benchmark"
    ck.typed(value, dict, "benchmark", "targets")
    ck.keys(value, where, set(BENCHMARK_KEYS))
    for key in ("format", "path"):
        if key not in value:
            raise ck.fail(f"[targets.benchmark] needs {key} (format: one of {list(FORMATS)}; path: the local file or "
                          "folder, relative to the recipe)", where, where)
    b = {"format": ck.typed(value["format"], str, "format", where), "split": ck.typed(value.get("split", ""), str,
                                                                                       "split", where)}
    if b["format"] not in FORMATS:
        raise ck.fail(f"[targets.benchmark] format {b['format']!r} is not one of {list(FORMATS)} (did you mean "
                      f"{close_matches(b['format'], FORMATS, 2)}?)", "format", where)
    path = Path(ck.typed(value["path"], str, "path", where)).expanduser()
    b["path"] = str((path if path.is_absolute() else base / path).resolve())
    for key in ("limit", "max_new_tokens"):
        if key in value and ck.typed(value[key], int, key, where) < 1:
            raise ck.fail(f"[targets.benchmark] {key} must be >= 1, got {value[key]}", key, where)
        b[key] = value.get(key)
    if "reference" in value:
        ref = Path(ck.typed(value["reference"], str, "reference", where)).expanduser()
        ref = ref if ref.is_absolute() else base / ref
        if not ref.is_file():
            raise ck.fail(f"[targets.benchmark] reference: no such file {str(ref)!r}; give the retain model's numbers "
                          "(`repedit benchmark score --model <retain model>` writes them)", "reference", where)
        b["reference"] = str(ref.resolve())
    try:
        bench = load_benchmark(b["format"], b["path"], b["split"], b["limit"])
        chosen, _ = bench.select(forget)
    except (InputError, SuiteNotFoundError) as exc:
        raise ck.fail(f"[targets.benchmark]: {exc}", "forget" if forget and "subject" in str(exc) else "path",
                      "targets" if forget and "subject" in str(exc) else where) from exc
    return b, chosen
