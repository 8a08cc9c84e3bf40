"""Facts from full or minimal records: your own files or recipe tables ("beyond country capitals").

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

import hashlib
import json
import random
from collections.abc import Mapping, Sequence

from repedit.errors import InputError, close_matches
from repedit.suites.templates import check_templates, merge_templates

FORMS = ("qa", "blank", "mc", "adversarial", "paraphrase")
DEFAULT_RELATION = "fact"
PROMPT_FORMS = ("qa", "blank", "paraphrase", "adversarial", "mc")     #: explicit form keys (prompt strings)
RECORD_KEYS = ("id", "subject", "relation", "answer", "aliases", "kind", "source", "prompt", "forms", "templates",
               *PROMPT_FORMS, "mc_options", "redirect_to")
#: generic templates when a relation has none; "{s}" stands for the fact's own prompt here
GENERIC = {"qa": "Complete the sentence: {s}", "blank": "{s}", "paraphrase": "A well-known fact: {s}",
           "shot": "{s} {a}."}


class RecordError(InputError):
    """A record (line of a file, or [[targets.facts]] table) is malformed; `index` is its position
    among the records, `key` the offending key (for pointing at a recipe line)."""

    def __init__(self, message: str, index: int | None = None, key: str | None = None):
        super().__init__(message)
        self.index, self.key = index, key


def _esc(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


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
    from repedit.suites import Fact, relation_kind
    from repedit.suites.build import RELATIONS

    wheres = list(wheres) if wheres is not None else [f"fact {i + 1}" for i in range(len(records))]
    merged: dict[str, dict] = {}
    for i, (d, where) in enumerate(zip(records, wheres)):   # records' `templates` (relation → …) come first
        if isinstance(d, Mapping) and "templates" in d:
            try:
                merge_templates(merged, check_templates(d["templates"]))
            except InputError as exc:
                raise RecordError(f"{where}: {exc}", i, "templates") from exc
    templates = merge_templates(merged, check_templates(templates or {}))
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
    from repedit.suites.build import ADVERSARIAL_PREFIX, TEMPLATE_KEYS, make_forms

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
