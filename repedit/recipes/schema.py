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
from pathlib import Path

from repedit.errors import ConfigError, close_matches
from repedit.recipes.checker import Checker, parse_section, recipe_folder, string_list
from repedit.recipes.sections import (
    BENCHMARK_KEYS,
    DEVICE_MAPS,
    DTYPES,
    FACT_ATTACKS,
    MIN_REFERENCES,
    SECTIONS,
    Attacks,
    EditSpec,
    Recipe,
    RecipeError,
    Targets,
    Verify,
)
from repedit.recipes.targets import parse_targets

__all__ = ["BENCHMARK_KEYS", "DEVICE_MAPS", "DTYPES", "FACT_ATTACKS", "MIN_REFERENCES", "SECTIONS", "Attacks",
           "EditSpec", "Recipe", "RecipeError", "Targets", "Verify", "load_recipe", "parse_recipe"]


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate a recipe's TOML text; see the module doc. Checks suites and methods exist."""
    from repedit.methods import METHODS, method_config

    ck = Checker(text, source)
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

    targets, facts = parse_targets(ck, raw.get("targets", {}), recipe_folder(source))
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

    verify = parse_section(ck, raw.get("verify", {}), "verify", Verify)
    attacks = parse_section(ck, raw.get("attacks", {}), "attacks", Attacks)
    from repedit.suites import FORMS

    bad = [f for f in verify.forms if f not in FORMS]
    if bad:
        raise ck.fail(f"unknown forms {bad}; valid: {list(FORMS)}", "forms", "verify")
    verify = _lm_eval(ck, verify, recipe_folder(source))
    if attacks.relearn_steps < 0 or attacks.relearn_lr <= 0 or attacks.relearn_every < 1 or attacks.trace_prompts < 0:
        raise ck.fail("[attacks] needs relearn_steps >= 0, relearn_lr > 0, relearn_every >= 1, trace_prompts >= 0")
    if attacks.relearn_steps and len(facts if targets.benchmark else targets.forget) < 2:
        raise ck.fail("the relearning attack trains on half the forget facts and measures the other half; "
                      "forget at least 2 subjects or set relearn_steps = 0", "relearn_steps", "attacks")
    _attack_choices(ck, attacks, targets)
    from repedit.data import find_sae  # here, else saes/<dir> of REPEDIT_DATA, the checkout, the wheel

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


def _attack_choices(ck: Checker, attacks: Attacks, targets: Targets) -> None:
    """The issue-17 attacks: valid quantisation schemes, k >= 1, and fact targets for the attacks that need them."""
    from repedit.verify.quantised_weights import parse_scheme

    for name in string_list(ck, list(attacks.quantisation), "quantisation", "attacks"):
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


def _lm_eval(ck: Checker, v: Verify, base: Path) -> Verify:
    """[verify] lm_eval_*: the include folder resolved (from the recipe's folder) and the tasks found in it or
    among lm-eval's built-ins (whose index, seconds, is read only for names the folder lacks)."""
    from repedit.verify.lm_eval_adapter import TaskNotFoundError, check_tasks, has_lm_eval

    tasks = string_list(ck, list(v.lm_eval_tasks), "lm_eval_tasks", "verify")
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


def _check_subjects(ck: Checker, targets: Targets, facts: list, edits: list, verify: Verify) -> None:
    """A method that reads the subject's tokens inside each form (MethodSpec.needs_subject) needs every
    forget fact's forms (the recipe's [verify] forms and the method's own `forms`) to contain its subject."""
    from repedit.methods import METHODS, method_config
    from repedit.suites import forms_missing_subject

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
