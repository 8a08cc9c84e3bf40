"""Facts and pools from your own files or recipe tables ("beyond country capitals").

A *minimal record* needs only `subject`, `answer` and `prompt` (a fill-in-the-blank prompt that the
answer completes; it becomes the fact's blank form). Optional: `relation` (default "fact"), `kind`,
`aliases` (a list; in CSV `|`-separated), `id` (default "<relation>/<subject>"), `source`, and any
explicit form: `qa`, `blank` (= `prompt`), `paraphrase`, `adversarial` (prompt strings), `mc` (the mc
prompt) with `mc_options` (the wrong options; the answer is added), or a `forms` object of full form
specs (the built-in format). Explicit forms win; the missing ones are generated:

- from the relation's templates (qa, blank, paraphrase with "{s}"; shot with "{s}" and "{a}"): a
  built-in relation's (`repedit.suites.build.RELATIONS`), overridden key by key by the file's
  (`{"templates": {"<relation>": {...}}}` on a JSONL line, or a record's `templates`) and then the recipe's
  (`[targets.templates.<relation>]`), with `repedit.suites.build.make_forms`; the fact's own prompt
  is its blank (and ends its adversarial form);
- else generic forms from the prompt: qa "Complete the sentence: <prompt>" (asked in chat),
  paraphrase "A well-known fact: <prompt>", adversarial = ADVERSARIAL_PREFIX + two other facts of the
  relation as "<prompt> <answer>." shots + the prompt, mc = "Question: <qa>\\nAnswer:" scored over the
  answer and 3 other answers of the relation.

Each fact's `source` records which forms were given and which were generated, and how. Generation is
deterministic: seeded by the records' content and order. Unknown keys or CSV columns are rejected
(a typo such as `anwser` would otherwise drop silently). Full records (the built-in suites) load
unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError, close_matches

FORMS = ("qa", "blank", "mc", "adversarial", "paraphrase")
DEFAULT_RELATION = "fact"
PROMPT_FORMS = ("qa", "blank", "paraphrase", "adversarial", "mc")     #: explicit form keys (prompt strings)
RECORD_KEYS = ("id", "subject", "relation", "answer", "aliases", "kind", "source", "prompt", "forms", "templates",
               *PROMPT_FORMS, "mc_options", "redirect_to")
#: generic templates when a relation has none; "{s}" stands for the fact's own prompt here
GENERIC = {"qa": "Complete the sentence: {s}", "blank": "{s}", "paraphrase": "A well-known fact: {s}",
           "shot": "{s} {a}."}
POOL_KEYS = ("key", "memorised", "paraphrase_c", "paraphrase_b", "source")
SUFFIXES = (".jsonl", ".csv")


class RecordError(InputError):
    """A record (line of a file, or [[targets.facts]] table) is malformed; `index` is its position
    among the records, `key` the offending key (for pointing at a recipe line)."""

    def __init__(self, message: str, index: int | None = None, key: str | None = None):
        super().__init__(message)
        self.index, self.key = index, key


def is_path(name_or_path: str) -> bool:
    """A file path (ends in .jsonl/.csv or holds a '/') rather than a built-in suite or pool name."""
    s = str(name_or_path)
    return s.endswith(SUFFIXES) or "/" in s or "\\" in s


# ----- reading files ----------------------------------------------------------------------------------
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
                _merge(templates, check_templates(d["templates"]))
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
    return facts_from_records(records, _merge(file_templates, check_templates(templates or {})),
                              origin=Path(path).name, wheres=wheres)


# ----- templates ----------------------------------------------------------------------------------------
def check_templates(templates) -> dict[str, dict[str, str]]:
    """Validate relation → {qa, blank, paraphrase, shot} (any subset); each a string with "{s}" (shot: and
    "{a}"). Returns plain dicts."""
    from .build import TEMPLATE_KEYS

    if not isinstance(templates, Mapping):
        raise InputError(f"templates must map a relation to its templates, got {templates!r}")
    out = {}
    for rel, t in templates.items():
        if not isinstance(t, Mapping):
            raise InputError(f"templates of relation {rel!r} must be a table of {list(TEMPLATE_KEYS)}, got {t!r}")
        for k, v in t.items():
            if k not in TEMPLATE_KEYS:
                raise InputError(f"relation {rel!r}: unknown template {k!r}; valid: {list(TEMPLATE_KEYS)} "
                                 f"(did you mean {close_matches(k, TEMPLATE_KEYS, 2)}?)")
            need = ("{s}", "{a}") if k == "shot" else ("{s}",)
            if not isinstance(v, str) or any(n not in v for n in need):
                raise InputError(f"relation {rel!r}: template {k} must be a string holding {' and '.join(need)} "
                                 f"({{s}} = subject, {{a}} = answer), got {v!r}")
            try:                                 # only shot is given the answer
                v.format(s="S", a="A") if k == "shot" else v.format(s="S")
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:   # "{s.x}", "{s[x]}"
                raise InputError(f"relation {rel!r}: template {k} {v!r} has a placeholder other than "
                                 f"{'{s}/{a}' if k == 'shot' else '{s} ({a} is for shot only)'} ({exc}); double "
                                 "literal braces: {{ }}") from exc
        out[str(rel)] = {k: str(v) for k, v in t.items()}
    return out


def _merge(into: dict, templates: Mapping) -> dict:
    """Relation templates merged key by key (later ones win)."""
    for rel, t in templates.items():
        into[rel] = {**into.get(rel, {}), **t}
    return into


def _esc(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# ----- records → facts -------------------------------------------------------------------------------
def _text(d: dict, key: str, where: str, i: int, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise RecordError(f"{where}: missing {key!r}; a minimal record needs subject, answer and prompt", i, key)
        return None
    if not isinstance(v, str) or not v.strip():
        raise RecordError(f"{where}: {key} must be a non-empty string, got {v!r}", i, key)
    return v.strip()


def _strings(d: dict, key: str, where: str, i: int) -> tuple[str, ...]:
    v = d.get(key, ())
    if isinstance(v, str):
        v = [a.strip() for a in v.split("|") if a.strip()]
    if not isinstance(v, (list, tuple)) or not all(isinstance(a, str) and a.strip() for a in v):
        raise RecordError(f"{where}: {key} must be a list of non-empty strings (CSV: 'a|b'), got {v!r}", i, key)
    return tuple(a.strip() for a in v)


def _normalise(d: dict, where: str, i: int) -> dict:
    if not isinstance(d, Mapping):
        raise RecordError(f"{where}: a fact must be a table/object, got {d!r}", i)
    for k in d:
        if k not in RECORD_KEYS:
            what = "column" if ".csv:" in where else "key"
            raise RecordError(f"{where}: unknown {what} {k!r}; valid: {list(RECORD_KEYS)} "
                              f"(did you mean {close_matches(str(k), RECORD_KEYS, 2)}?)", i, k)
    subject = _text(d, "subject", where, i, True)
    answer = _text(d, "answer", where, i, True)
    relation = _text(d, "relation", where, i) or DEFAULT_RELATION
    forms = {}
    given = d.get("forms", {})
    if not isinstance(given, Mapping):
        raise RecordError(f"{where}: forms must map a form to its spec, got {given!r}", i, "forms")
    for name, spec in given.items():
        if name not in FORMS:
            raise RecordError(f"{where}: unknown form {name!r}; valid: {list(FORMS)}", i, "forms")
        spec = {"prompt": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping) or not isinstance(spec.get("prompt"), str) or not spec["prompt"].strip():
            raise RecordError(f"{where}: form {name!r} needs a non-empty prompt, got {spec!r}", i, "forms")
        forms[name] = {"chat": name == "qa", **spec}
    for name in PROMPT_FORMS:
        p = _text(d, name, where, i)
        if p is not None:
            forms[name] = {**forms.get(name, {}), "prompt": p, "chat": name == "qa"}
    prompt = _text(d, "prompt", where, i)
    if prompt is not None:
        if "blank" in forms and forms["blank"]["prompt"] != prompt:
            raise RecordError(f"{where}: prompt and blank differ; they are the same form (give one)", i, "prompt")
        forms["blank"] = {"prompt": prompt, "chat": False}
    aliases = _strings(d, "aliases", where, i)
    mc_options = _strings(d, "mc_options", where, i)
    mc = forms.get("mc")
    if mc_options:
        if any(o.lower() == answer.lower() for o in mc_options):
            raise RecordError(f"{where}: mc_options are the wrong options; drop the answer {answer!r} (it is added)",
                              i, "mc_options")
        forms["mc"] = {"prompt": (mc or {}).get("prompt"), "chat": False, "options": list(mc_options)}
    elif mc is not None and "options" not in mc:
        forms["mc"] = {"prompt": mc["prompt"], "chat": False}     # a prompt only: options are generated
    elif mc is not None:
        opts, idx = mc.get("options"), mc.get("answer_index")
        if not isinstance(opts, list) or not isinstance(idx, int) or not 0 <= idx < len(opts) or opts[idx] != answer:
            raise RecordError(f"{where}: form mc needs options (a list) with options[answer_index] == the answer",
                              i, "forms")
    return {"id": _text(d, "id", where, i) or f"{relation}/{subject}", "subject": subject, "answer": answer,
            "relation": relation, "kind": _text(d, "kind", where, i), "aliases": aliases, "forms": forms,
            "source": _text(d, "source", where, i), "redirect_to": _text(d, "redirect_to", where, i) or None,
            "where": where}


def _seed(records: Sequence, templates: Mapping) -> int:
    blob = json.dumps([list(records), dict(templates)], sort_keys=True, ensure_ascii=False, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:16], 16)


def facts_from_records(records: Sequence[Mapping], templates: Mapping | None = None, origin: str = "",
                       wheres: Sequence[str] | None = None) -> list:
    """Facts (five forms each) from full or minimal records; see the module doc. `templates`: relation →
    {qa, blank, paraphrase, shot} (override the built-in relations' key by key); `origin` names where the
    records came from (in each generated fact's source); `wheres` labels each record in errors."""
    from . import Fact, relation_kind
    from .build import RELATIONS

    wheres = list(wheres) if wheres is not None else [f"fact {i + 1}" for i in range(len(records))]
    merged: dict[str, dict] = {}
    for i, (d, where) in enumerate(zip(records, wheres)):   # records' `templates` (relation → …) come first
        if isinstance(d, Mapping) and "templates" in d:
            try:
                _merge(merged, check_templates(d["templates"]))
            except InputError as exc:
                raise RecordError(f"{where}: {exc}", i, "templates") from exc
    templates = _merge(merged, check_templates(templates or {}))
    recs = [_normalise(d, w, i) for i, (d, w) in enumerate(zip(records, wheres))]
    seen: dict[str, str] = {}
    for i, r in enumerate(recs):
        if r["id"] in seen:
            raise RecordError(f"{r['where']}: duplicate id {r['id']!r} (also {seen[r['id']]}); give each fact a "
                              "distinct id (or subject)", i, "id")
        seen[r["id"]] = r["where"]
    seed = _seed(records, templates)
    by_rel: dict[str, list[dict]] = {}
    for r in recs:
        by_rel.setdefault(r["relation"], []).append(r)
    facts = []
    for i, r in enumerate(recs):
        rel = r["relation"]
        t = {**RELATIONS.get(rel, {}), **templates.get(rel, {})}
        t.pop("kind", None)
        kind = r["kind"] or relation_kind(rel)
        missing = [f for f in FORMS if f not in r["forms"] or (f == "mc" and "answer_index" not in r["forms"][f])]
        if not missing:
            facts.append(Fact(r["id"], r["subject"], rel, r["answer"], r["aliases"], r["forms"], r["source"] or origin,
                              kind, r["redirect_to"]))
            continue
        forms, note = _generate(r, t, by_rel[rel], missing, random.Random(f"{seed}:{i}"), i)
        given = [f for f in FORMS if f not in missing]
        source = "; ".join(x for x in (r["source"] or origin or "inline", f"given: {', '.join(given) or 'none'}",
                                       note) if x)
        facts.append(Fact(r["id"], r["subject"], rel, r["answer"], r["aliases"], forms, source, kind,
                          r["redirect_to"]))
    return facts


def _generate(r: dict, t: dict, group: list[dict], missing: list[str], rng: random.Random, i: int):
    """(the five forms, a note on how the missing ones were made) of normalised record `r`."""
    from .build import ADVERSARIAL_PREFIX, TEMPLATE_KEYS, make_forms

    rel, subject, answer, given = r["relation"], r["subject"], r["answer"], r["forms"]
    prompt = given.get("blank", {}).get("prompt")
    generic = not t
    if generic:                                  # no templates: the fact's own prompt stands for "{s}"
        if prompt is None:
            raise RecordError(f"{r['where']}: relation {rel!r} has no templates, so each fact needs a prompt (a "
                              f"fill-in-the-blank the answer completes); or give [targets.templates.{rel}] "
                              f"{list(TEMPLATE_KEYS)}", i, "prompt")
        if any(g["forms"].get("blank") is None for g in group):
            bad = next(g for g in group if g["forms"].get("blank") is None)
            raise RecordError(f"{bad['where']}: relation {rel!r} has no templates, so each of its facts needs a "
                              "prompt (the other facts' prompts are the adversarial form's shots)", i, "prompt")
        tpl, key = dict(GENERIC), prompt
        pool = [(g["forms"]["blank"]["prompt"], g["answer"]) for g in group]
        how = ("generic forms from the prompt (relation without templates): qa 'Complete the sentence: <prompt>' "
               "in chat, paraphrase 'A well-known fact: <prompt>', mc over the answer and 3 other answers of "
               "the relation, adversarial = prefix + 2 other facts' '<prompt> <answer>.' + the prompt")
    else:
        tpl, key = dict(t), subject
        for f in ("qa", "blank", "paraphrase"):
            if f in given:
                tpl[f] = _esc(given[f]["prompt"])
        if "shot" not in tpl and "adversarial" not in missing:
            tpl["shot"] = "{s} {a}."                                   # unused: the adversarial form is given
        lack = [k for k in TEMPLATE_KEYS if k not in tpl]
        if lack:
            raise RecordError(f"{r['where']}: relation {rel!r} needs templates for {lack} (or explicit forms): "
                              f"give [targets.templates.{rel}] {', '.join(f'{k} = ...' for k in lack)} "
                              "('{s}' = subject; shot also '{a}' = answer)", i, "relation")
        pool = [(g["subject"], g["answer"]) for g in group]
        how = f"from relation {rel!r} templates (repedit.suites.build.make_forms)"
    others = [(s, a) for s, a in pool if s != key and a.lower() != answer.lower()]
    answers = sorted({a for _, a in others})
    need_mc = "mc" in missing and "options" not in given.get("mc", {})
    if need_mc and len(answers) < 3:
        raise RecordError(f"{r['where']}: the mc form of {r['id']!r} needs 3 other distinct answers in relation "
                          f"{rel!r}, which has {len(answers)} ({answers}); add facts to the relation, or give the "
                          "form explicitly (mc_options = the wrong options)", i)
    if "adversarial" in missing and len(others) < 2:
        raise RecordError(f"{r['where']}: the adversarial form of {r['id']!r} needs 2 other facts (with other "
                          f"answers) in relation {rel!r}, which has {len(others)}; add facts to the relation, or give "
                          "the form explicitly (adversarial = \"...\")", i)
    if len(answers) >= 3 and len(others) >= 2:
        made = make_forms(rel, key, answer, pool, rng, templates=tpl)
    else:                                        # mc given: no distractors to draw (make_forms would need them)
        made = {f: {"prompt": tpl[f].format(s=key), "chat": f == "qa"} for f in ("qa", "blank", "paraphrase")}
        if "adversarial" in missing:
            shots = rng.sample(others, 2)
            made["adversarial"] = {"prompt": ADVERSARIAL_PREFIX + " ".join(tpl["shot"].format(s=s, a=a)
                                                                          for s, a in shots)
                                   + " " + tpl["blank"].format(s=key), "chat": False}
    forms = {f: dict(given[f]) if f in given and f not in missing else made.get(f) for f in FORMS}
    qa_prompt = (given.get("qa") or made["qa"])["prompt"]
    if "mc" in missing:
        mc = dict(given.get("mc", {}))
        options = list(mc["options"]) + [answer] if "options" in mc else list(made["mc"]["options"])
        if "options" in mc:
            rng.shuffle(options)
        forms["mc"] = {"prompt": mc.get("prompt") or f"Question: {qa_prompt}\nAnswer:", "chat": False,
                       "options": options, "answer_index": options.index(answer)}
    return forms, f"generated: {', '.join(missing)} {how}"


def forms_missing_subject(fact, forms: Sequence[str]) -> list[str]:
    """The forms among `forms` whose prompt does not contain the fact's subject verbatim (ROCR and SAE
    alignment read the subject's tokens inside each form)."""
    return [f for f in forms if f in fact.forms and fact.subject not in fact.forms[f]["prompt"]]


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
