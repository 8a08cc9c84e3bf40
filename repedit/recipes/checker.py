"""Checks of a recipe's TOML tables whose errors name the recipe line, shared by the section parsers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from repedit.errors import close_matches
from repedit.recipes.sections import SECTIONS, RecipeError


def line_of(text: str, key: str, section: str | None = None, nth: int = 0) -> int | None:
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


class Checker:
    """Builds `RecipeError`s at the recipe line of a key; checks tables' keys and values' types."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def fail(self, msg: str, key: str | None = None, section: str | None = None, nth: int = 0) -> RecipeError:
        line = line_of(self.text, key, section, nth) if key else None
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


def string_list(ck: Checker, value, key: str, section: str) -> tuple[str, ...]:
    """A list of non-empty strings, as a tuple."""
    ck.typed(value, list, key, section)
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ck.fail(f"[{section}] {key} must be a list of non-empty strings", key, section)
    return tuple(value)


def parse_section(ck: Checker, table: dict, section: str, cls):
    """Dataclass `cls` from a table of its fields, each typed like the field's default."""
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


def recipe_folder(source: str) -> Path:
    """The folder relative suite and pool paths are read from: the recipe's (else the current one)."""
    p = Path(source)
    return p.parent if p.is_file() else Path.cwd()
