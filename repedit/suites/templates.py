"""Relation templates given by users (files, records, recipes): validated and merged."""

from __future__ import annotations

from collections.abc import Mapping

from repedit.errors import InputError, close_matches


def check_templates(templates) -> dict[str, dict[str, str]]:
    """Validate relation → {qa, blank, paraphrase, shot} (any subset); each a string with "{s}" (shot: and
    "{a}"). Returns plain dicts."""
    from repedit.suites.build import TEMPLATE_KEYS

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


def merge_templates(into: dict, templates: Mapping) -> dict:
    """Relation templates merged key by key (later ones win)."""
    for rel, t in templates.items():
        into[rel] = {**into.get(rel, {}), **t}
    return into
