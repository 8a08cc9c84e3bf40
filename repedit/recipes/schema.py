"""TOML recipe → typed, validated `Recipe` (no compute happens here).

A recipe names the model, the targets, one or more edits (each a method and its config), the
verification and attacks, and the export. Validation is strict and happens before any model is
loaded: unknown sections or keys, wrong types, bad values, unknown suites or methods, and method
configs that their dataclass rejects all raise `RecipeError` naming the line and the fix.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ReprEditError, close_matches


class RecipeError(ReprEditError, ValueError):
    """A recipe cannot be run as written (the message names the line and the fix)."""


@dataclass(frozen=True)
class Targets:
    """What to forget (facts by subject from a suite, a file or inline tables) and what to keep; or a
    memorised pool (by name, path or inline keys)."""

    suite: str = "capitals"                  #: built-in suite (probes/facts/<name>.jsonl) or a .jsonl/.csv path
    forget: tuple[str, ...] = ()             #: subjects to forget
    retain: int | tuple[str, ...] = 10       #: retain facts: a count (known facts of the suite) or subjects
    neighbours: int = 12                     #: held-out facts of the same suite, never trained on
    unrelated_suite: str = "elements"        #: a different suite (name or path), for unrelated facts
    unrelated: int = 20
    known_only: bool = True                  #: keep only facts the model answers (greedy, blank form)
    pool: str | None = None                  #: memorised pool (probes/memorised/<name>.jsonl or a path)
    contexts: int = 8                        #: pool contexts per key
    facts: tuple[dict, ...] = ()             #: inline facts ([[targets.facts]], minimal records), instead of suite
    templates: dict = field(default_factory=dict)   #: relation -> {qa, blank, paraphrase, shot} templates
    pool_keys: tuple[dict, ...] = ()         #: inline pool ([[targets.pool_keys]]), instead of pool
    #: unknown reference entities of the targets' kind for the knownness probe and SAE-align;
    #: default: invented ones of that kind (if given: at least 10 distinct names)
    references: tuple[str, ...] = ()
    #: a standard benchmark as the targets ([targets.benchmark]: format, path, split, limit, reference,
    #: max_new_tokens); its forget split is forgotten (or the subjects in `forget`), its own metrics reported
    benchmark: dict = field(default_factory=dict)

    @property
    def has_pool(self) -> bool:
        return bool(self.pool or self.pool_keys)


@dataclass(frozen=True)
class EditSpec:
    method: str
    name: str                                #: label in reports (default: the method)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verify:
    forms: tuple[str, ...] = ("qa", "blank", "mc", "adversarial", "paraphrase")
    perplexity_docs: int = 20                #: held-out news documents
    signature_depths: tuple[int, ...] = ()   #: LOO probe depths (pool targets)
    knownness: bool = True                   #: known-vs-unknown residual probe on the forget subjects (facts)
    knownness_layer: int = -1                #: its residual layer (resid_post); -1 = the model's preset
    lm_eval_tasks: tuple[str, ...] = ()      #: lm-eval tasks scored before and after each edit (repedit[eval])
    lm_eval_include: str | None = None       #: folder of lm-eval task YAMLs (relative: from the recipe's folder)
    lm_eval_limit: int = 0                   #: items per lm-eval task (0 = all)


@dataclass(frozen=True)
class Attacks:
    prefixes: bool = True                    #: adversarial prefixes and in-context hints
    relearn_steps: int = 0                   #: 0 = off; fine-tune steps on half the forget facts
    relearn_lr: float = 1e-5
    relearn_every: int = 5
    trace_prompts: int = 0                   #: 0 = off; forget-irrelevant prompts for trace detection
    sae: str | None = None                   #: SAE directory for SAE restoration (None = off)
    probes: bool = False                     #: six probe variants + re-fit attacker (pool targets)
    quantisation: tuple[str, ...] = ()       #: schemes: int8, int4-g<G>, gguf-q8_0/q4_0/q4_1/q5_0/q5_1 (facts)
    weight_diff: bool = False                #: read the edit out of edited − base weights (facts)
    weight_diff_k: int = 8                   #: singular directions per weight the attacker reads
    extraction: bool = False                 #: logit lens + tuned read-out at every layer (facts)
    membership: bool = False                 #: loss / zlib / min-k / min-k++ AUC, forget vs retain (facts)
    remind: bool = False                     #: REMIND input-loss landscape, forget vs retain (facts)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    seed: int
    targets: Targets
    edits: tuple[EditSpec, ...]
    verify: Verify
    attacks: Attacks
    export: str | None                       #: edit name whose edited model is exported (None = no export)
    source: str = ""                         #: where the recipe came from
    dtype: str = "float32"                   #: [model] dtype: float32 | bfloat16 | float16
    device_map: str | None = None            #: [model] device_map for accelerate ("auto", "balanced", ...)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DTYPES = ("float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")
SECTIONS = {"run": {"name", "seed"}, "model": {"id", "dtype", "device_map"},
            "targets": {f.name for f in dataclasses.fields(Targets)},
            "edit": {"method", "name", "config"}, "verify": {f.name for f in dataclasses.fields(Verify)},
            "attacks": {f.name for f in dataclasses.fields(Attacks)}, "export": {"edit"}}


def _line(text: str, key: str, section: str | None = None, nth: int = 0) -> int | None:
    """1-based line of `key =` (after the `nth` [section] / [[section]] header if given), for errors."""
    lines = text.splitlines()
    start = 0
    if section:
        heads = [i for i, ln in enumerate(lines) if re.match(rf"\s*\[\[?{re.escape(section)}\]?\]", ln)]
        start = heads[min(nth, len(heads) - 1)] if heads else 0
    for pattern in (rf"\s*{re.escape(key)}\s*=", rf"\s*\[\[?{re.escape(key)}\]?\]", rf".*\b{re.escape(key)}\s*="):
        for i in range(start, len(lines)):
            if re.match(pattern, lines[i]):
                return i + 1
    return start + 1 if section and start else None


class _Checker:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def fail(self, msg: str, key: str | None = None, section: str | None = None, nth: int = 0) -> RecipeError:
        line = _line(self.text, key, section, nth) if key else None
        where = f"{self.source}:{line}: " if line else f"{self.source}: "
        return RecipeError(where + msg)

    def keys(self, table: dict, section: str, allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"unknown key {k!r} in [{section}]; valid: {sorted(allowed)} "
                                f"(did you mean {close_matches(k, allowed, 2)}?)", k, section)

    def typed(self, value, kind, key: str, section: str):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(f"[{section}] {key} must be {names}, got {value!r}", key, section)
        return value


def _strings(ck: _Checker, value, key: str, section: str) -> tuple[str, ...]:
    ck.typed(value, list, key, section)
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ck.fail(f"[{section}] {key} must be a list of non-empty strings", key, section)
    return tuple(value)


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate a recipe's TOML text; see the module doc. Checks suites and methods exist."""
    from .methods import METHODS, method_config

    ck = _Checker(text, source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{source}: not valid TOML ({exc}); fix the syntax at that line") from exc
    for sec in raw:
        if sec not in SECTIONS:
            raise ck.fail(f"unknown section [{sec}]; valid: {sorted(SECTIONS)} "
                          f"(did you mean {close_matches(sec, SECTIONS, 2)}?)", sec)
        if sec != "edit" and not isinstance(raw[sec], dict):
            raise ck.fail(f"{sec} must be a [{sec}] table (a [{sec}] header, then key = value lines), got "
                          f"{raw[sec]!r}", sec)
    run, model = raw.get("run", {}), raw.get("model", {})
    ck.keys(run, "run", SECTIONS["run"])
    ck.keys(model, "model", SECTIONS["model"])
    stem = Path(source).stem
    name = ck.typed(run.get("name", stem if re.fullmatch(r"[A-Za-z0-9._-]+", stem) else "run"), str, "name", "run")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ck.fail(f"[run] name {name!r} may hold only letters, digits, '.', '_' and '-' (it names a directory)",
                      "name", "run")
    seed = ck.typed(run.get("seed", 0), int, "seed", "run")
    model_id = ck.typed(model.get("id", "smollm2-135m"), str, "id", "model")
    dtype = ck.typed(model.get("dtype", "float32"), str, "dtype", "model")
    device_map = ck.typed(model["device_map"], str, "device_map", "model") if "device_map" in model else None
    if dtype not in DTYPES:
        raise ck.fail(f"[model] dtype {dtype!r} is not one of {list(DTYPES)}", "dtype", "model")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ck.fail(f"[model] device_map {device_map!r} is not one of {list(DEVICE_MAPS)} (accelerate's)",
                      "device_map", "model")

    targets, facts = _targets(ck, raw.get("targets", {}), _base(source))
    edits_raw = raw.get("edit", [])
    if isinstance(edits_raw, dict):
        raise ck.fail("write each edit as an [[edit]] table (double brackets), even a single one", "edit")
    if not isinstance(edits_raw, list) or not all(isinstance(e, dict) for e in edits_raw):
        raise ck.fail(f"write each edit as an [[edit]] table (a header, then method = ... below), got {edits_raw!r}",
                      "edit")
    if not edits_raw:
        raise ck.fail(f"a recipe needs at least one [[edit]] with a method; methods: {sorted(METHODS)}")
    edits, names = [], set()
    for i, e in enumerate(edits_raw):
        for k in e:
            if k not in SECTIONS["edit"]:
                raise ck.fail(f"unknown key {k!r} in [[edit]]; valid: {sorted(SECTIONS['edit'])} (method-specific "
                              "settings go in config = {...})", k, "edit", i)
        method = ck.typed(e.get("method", ""), str, "method", "edit")
        if method not in METHODS:
            raise ck.fail(f"unknown method {method!r} in edit {i + 1}; valid: {sorted(METHODS)} "
                          f"(did you mean {close_matches(method, METHODS, 2)}?)", "method", "edit", i)
        spec = METHODS[method]
        if spec.targets == "pool" and not targets.has_pool:
            raise ck.fail(f"method {method!r} works on a memorised pool; set [targets] pool = \"natural\" (a name or "
                          "a .jsonl/.csv path) or give [[targets.pool_keys]]",
                          "method", "edit", i)
        if spec.targets == "facts" and not (targets.forget or targets.benchmark):
            raise ck.fail(f"method {method!r} forgets facts; set [targets] forget = [\"France\", ...]",
                          "method", "edit", i)
        label = ck.typed(e.get("name", method), str, "name", "edit")
        if label in names:
            raise ck.fail(f"two edits are named {label!r}; give each [[edit]] a distinct name", "name", "edit", i)
        names.add(label)
        cfg = ck.typed(e.get("config", {}), dict, "config", "edit")
        try:
            method_config(method, cfg)
        except (ConfigError, TypeError) as exc:
            key = next((k for k in cfg if k in str(exc)), "config")
            raise ck.fail(f"edit {label!r}: {exc}", key, "edit", i) from exc
        edits.append(EditSpec(method, label, dict(cfg)))

    verify = _section(ck, raw.get("verify", {}), "verify", Verify)
    attacks = _section(ck, raw.get("attacks", {}), "attacks", Attacks)
    from ..suites import FORMS

    bad = [f for f in verify.forms if f not in FORMS]
    if bad:
        raise ck.fail(f"unknown forms {bad}; valid: {list(FORMS)}", "forms", "verify")
    verify = _lm_eval(ck, verify, _base(source))
    if attacks.relearn_steps < 0 or attacks.relearn_lr <= 0 or attacks.relearn_every < 1 or attacks.trace_prompts < 0:
        raise ck.fail("[attacks] needs relearn_steps >= 0, relearn_lr > 0, relearn_every >= 1, trace_prompts >= 0")
    if attacks.relearn_steps and len(facts if targets.benchmark else targets.forget) < 2:
        raise ck.fail("the relearning attack trains on half the forget facts and measures the other half; "
                      "forget at least 2 subjects or set relearn_steps = 0", "relearn_steps", "attacks")
    _attack_choices(ck, attacks, targets)
    from ..data import find_sae  # here, else saes/<dir> of REPEDIT_DATA, the checkout, the wheel

    if attacks.sae is not None and find_sae(attacks.sae) is None:
        raise ck.fail(f"[attacks] sae {attacks.sae!r} is not an SAE directory (no cfg.json) here nor in the "
                      "saes/ folders (REPEDIT_DATA, the checkout, the installed package); e.g. "
                      "saes/smollm2-135m-L15-topk", "sae", "attacks")
    export = raw.get("export", {})
    ck.keys(export, "export", SECTIONS["export"])
    export_edit = ck.typed(export["edit"], str, "edit", "export") if "edit" in export else None
    if export_edit is not None and export_edit not in names:
        raise ck.fail(f"[export] edit {export_edit!r} is not one of the edits {sorted(names)}", "edit", "export")
    if targets.forget or targets.benchmark:
        _check_subjects(ck, targets, facts, edits, verify)
    return Recipe(name, model_id, seed, targets, tuple(edits), verify, attacks, export_edit, source, dtype, device_map)


FACT_ATTACKS = ("quantisation", "weight_diff", "extraction", "membership", "remind")


def _attack_choices(ck: _Checker, attacks: Attacks, targets: Targets) -> None:
    """The issue-17 attacks: valid quantisation schemes, k >= 1, and fact targets for the attacks that need them."""
    from ..verify.quantisation import parse_scheme

    for name in _strings(ck, list(attacks.quantisation), "quantisation", "attacks"):
        try:
            parse_scheme(name)
        except ConfigError as exc:
            raise ck.fail(f"[attacks] quantisation: {exc}", "quantisation", "attacks") from exc
    if attacks.weight_diff_k < 1:
        raise ck.fail("[attacks] weight_diff_k must be >= 1 (directions per weight)", "weight_diff_k", "attacks")
    on = [a for a in FACT_ATTACKS if getattr(attacks, a)]
    if on and not (targets.forget or targets.benchmark):
        raise ck.fail(f"[attacks] {', '.join(on)} attack fact targets; set [targets] forget = [...] (or a "
                      f"benchmark), or turn them off for a memorised pool", on[0], "attacks")


def _section(ck: _Checker, table: dict, section: str, cls):
    ck.keys(table, section, SECTIONS[section])
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in table:
            continue
        v, default = table[f.name], f.default
        if isinstance(default, tuple):
            kw[f.name] = tuple(ck.typed(v, list, f.name, section))
            if any(type(x) is not type(default[0]) for x in kw[f.name]) if default else False:
                raise ck.fail(f"[{section}] {f.name} must be a list of {type(default[0]).__name__}", f.name, section)
        elif default is None:
            kw[f.name] = ck.typed(v, str, f.name, section)
        else:
            kind = (int, float) if isinstance(default, float) else type(default)
            kw[f.name] = ck.typed(v, kind, f.name, section)
    return cls(**kw)


def _lm_eval(ck: _Checker, v: Verify, base: Path) -> Verify:
    """[verify] lm_eval_*: the include folder resolved (from the recipe's folder) and the tasks found in it or
    among lm-eval's built-ins (whose index, seconds, is read only for names the folder lacks)."""
    from ..verify.lm_eval_adapter import TaskNotFoundError, check_tasks, has_lm_eval

    tasks = _strings(ck, list(v.lm_eval_tasks), "lm_eval_tasks", "verify")
    if v.lm_eval_limit < 0:
        raise ck.fail(f"[verify] lm_eval_limit must be >= 0 (0 = every item), got {v.lm_eval_limit}",
                      "lm_eval_limit", "verify")
    include = v.lm_eval_include
    if include is not None:
        path = Path(include).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_dir():
            raise ck.fail(f"[verify] lm_eval_include: no such folder {str(path)!r} (relative paths are read "
                          f"from the recipe's folder, {str(base)!r}); valid: a folder of lm-eval task YAMLs",
                          "lm_eval_include", "verify")
        include = str(path.resolve())
    if tasks and not has_lm_eval():
        raise ck.fail("[verify] lm_eval_tasks needs lm-eval: pip install 'repedit[eval]' (or drop the key)",
                      "lm_eval_tasks", "verify")
    if tasks:
        try:
            check_tasks(tasks, include)
        except TaskNotFoundError as exc:
            raise ck.fail(f"[verify] {exc}", "lm_eval_tasks", "verify") from exc
    return dataclasses.replace(v, lm_eval_tasks=tasks, lm_eval_include=include)


MIN_REFERENCES = 10
_OWN = ("retain", "forget", "pool", "facts", "templates", "pool_keys", "references", "benchmark")
BENCHMARK_KEYS = ("format", "path", "split", "limit", "reference", "max_new_tokens")


def _base(source: str) -> Path:
    """The folder relative suite and pool paths are read from: the recipe's (else the current one)."""
    p = Path(source)
    return p.parent if p.is_file() else Path.cwd()


def _ref(ck: _Checker, value: str, key: str, folder: str, base: Path) -> str:
    """A built-in name (checked under probes/<folder>/) or a path (resolved against `base`, must exist)."""
    from ..suites import probes_dir
    from ..suites.user import is_path

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


def _records(ck: _Checker, value, key: str) -> tuple[dict, ...]:
    if isinstance(value, dict):
        raise ck.fail(f"write each of [targets] {key} as a [[targets.{key}]] table (double brackets)", key, "targets")
    ck.typed(value, list, key, "targets")
    for i, d in enumerate(value):
        if not isinstance(d, dict):
            raise ck.fail(f"[targets] {key} item {i + 1} must be a table, got {d!r}", f"targets.{key}",
                          f"targets.{key}", i)
    return tuple(dict(d) for d in value)


def _record_fail(ck: _Checker, exc, key: str, records: tuple[dict, ...]) -> RecipeError:
    """An inline record's error, at its [[targets.<key>]] table (or the offending key inside it)."""
    from ..suites.user import RecordError

    if isinstance(exc, RecordError) and exc.index is not None and exc.index < len(records):
        at = exc.key if exc.key in records[exc.index] else f"targets.{key}"
        doc = "probes/facts/README.md" if key == "facts" else "probes/memorised/README.md"
        return ck.fail(f"{exc}; the format: {doc}",
                       at, f"targets.{key}", exc.index)
    return ck.fail(f"[[targets.{key}]]: {exc}", key, "targets")


def _templates(ck: _Checker, value) -> dict:
    from ..errors import InputError
    from ..suites.user import check_templates

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


def _targets(ck: _Checker, table: dict, base: Path) -> tuple[Targets, list]:
    """The [targets] section, and its facts (loaded, forms generated) when it forgets facts."""
    from ..errors import InputError, SuiteNotFoundError
    from ..suites import suite_facts
    from ..suites.user import pool_records, read_pool_records

    t = _section(ck, {k: v for k, v in table.items() if k not in _OWN}, "targets", Targets)
    ck.keys(table, "targets", SECTIONS["targets"])
    forget = _strings(ck, table["forget"], "forget", "targets") if "forget" in table else ()
    retain = table.get("retain", 10)
    if isinstance(retain, list):
        retain = _strings(ck, retain, "retain", "targets")
    else:
        ck.typed(retain, int, "retain", "targets")
    pool = ck.typed(table["pool"], str, "pool", "targets") if "pool" in table else None
    templates = _templates(ck, table["templates"]) if "templates" in table else {}
    facts = _records(ck, table["facts"], "facts") if "facts" in table else ()
    pool_keys = _records(ck, table["pool_keys"], "pool_keys") if "pool_keys" in table else ()
    references = _strings(ck, table["references"], "references", "targets") if "references" in table else ()
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
        from ..suites import load_suite

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


def _benchmark(ck: _Checker, value, base: Path, forget: tuple[str, ...]) -> tuple[dict, list]:
    """[targets.benchmark]: checked, its path resolved, and the benchmark read (its forget facts returned)."""
    from ..errors import InputError, SuiteNotFoundError
    from ..suites.formats import FORMATS, load_benchmark

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


def _check_subjects(ck: _Checker, targets: Targets, facts: list, edits: list, verify: Verify) -> None:
    """A method that reads the subject's tokens inside each form (MethodSpec.needs_subject) needs every
    forget fact's forms (the recipe's [verify] forms and the method's own `forms`) to contain its subject."""
    from ..suites import forms_missing_subject
    from .methods import METHODS, method_config

    by = {f.subject: (i, f) for i, f in enumerate(facts)}
    for n, e in enumerate(edits):
        if not METHODS[e.method].needs_subject:
            continue
        forms = tuple(dict.fromkeys((*verify.forms, *getattr(method_config(e.method, e.config), "forms", ()))))
        pairs = [(None, f) for f in facts] if targets.benchmark else [by[s] for s in targets.forget]
        for i, fact in pairs:
            missing = forms_missing_subject(fact, forms)
            if not missing:
                continue
            form = missing[0]
            where = (("targets.facts", "targets.facts", i) if targets.facts else
                     ("forms", "verify", 0) if form in verify.forms else ("config", "edit", n))
            drop = "[verify] forms" + ("" if form in verify.forms else " and the edit's config forms")
            if targets.benchmark:
                others = sorted(k for k, m in METHODS.items() if not m.needs_subject and m.targets == "facts")
                drop += (", forget only subjects whose questions name them ([targets] forget), or use a method that "
                         f"does not read the subject ({others})")
            raise ck.fail(f"edit {e.name!r} ({e.method}) reads the subject's tokens in every form, but fact "
                          f"{fact.id!r} form {form!r} does not contain its subject {fact.subject!r}: "
                          f"{fact.forms[form]['prompt']!r}; valid: put {fact.subject!r} in that prompt (give the "
                          f"form explicitly) or drop {missing} from {drop}", *where)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe" if path.is_dir() else "no such recipe"
        raise RecipeError(f"{path}: {what}; give a .toml recipe file (see recipes/ for examples)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc}); save the recipe as UTF-8 (TOML is UTF-8)") from exc
    return parse_recipe(text, str(path))
