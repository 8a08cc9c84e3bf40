"""Command-line options from a method's config dataclass (DESIGN principle 6: one config class drives
API, CLI and JSON): every field becomes `--field-name`, tuples are comma-separated lists, bools are
`--x/--no-x` flags, the help is the field's `#:` comment. Unset options stay unset, so the config's
own default (or the model's preset) applies."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import typer
from rich.markup import escape

from repedit.errors import ConfigError, InputError

OVERRIDES = "overrides"      #: the parameter of a decorated command that receives the set fields (a dict)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's `#:` comment in the class source (the field docstrings of the config classes)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^\n]*?#:\s*(.+)$", source, re.MULTILINE):
            docs[m.group(1)] = m.group(2).strip()
    return docs


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return hint, False


def _element(hint: Any) -> type | None:
    """The element type of `tuple[X, ...]` or `tuple[X, ...] | str` (None when `hint` is neither)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        tuples = [a for a in args if typing.get_origin(a) is tuple]
        return _element(tuples[0]) if tuples and set(args) - set(tuples) <= {str} else None
    if typing.get_origin(hint) is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return args[0] if args else str
    return None


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _param(f: dataclasses.Field, hint: Any, doc: str, preset: bool) -> tuple[inspect.Parameter, Callable[[Any], Any]]:
    """The typer parameter of one field and the parser of its raw value."""
    base, _ = _unwrap(hint)
    elem = _element(base)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    shown = ("the model's preset" if preset else "none") if default is None else _show(default)
    details = ([f"comma-separated {elem.__name__}s"] if elem is not None else []) + [f"default: {shown}"]
    help_text = escape(f"{doc} ({'; '.join(details)})".strip())     # typer reads help as rich markup
    name = "--" + f.name.replace("_", "-")
    if base is bool:
        option = typer.Option(None, f"{name}/--no-{f.name.replace('_', '-')}", help=help_text, show_default=False)
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                 annotation=typing.Optional[bool]), lambda v: v
    if elem is not None:
        words = typing.get_origin(base) in (typing.Union, types.UnionType)     # tuple[...] | str: a word too

        def parse(raw: str, elem=elem, field=f.name, words=words):
            if words and re.fullmatch(r"[A-Za-z_]+", raw.strip()):
                return raw.strip()
            try:
                return tuple(elem(x.strip()) for x in raw.split(",") if x.strip())
            except ValueError:
                raise InputError(f"--{field.replace('_', '-')} takes comma-separated {elem.__name__}s, "
                                 f"got {raw!r}") from None
        kind: Any = str
    elif base in (int, float, str):
        kind, parse = base, (lambda v: v)
    else:
        raise ConfigError(f"config field {f.name!r} has type {hint!r}, which has no command-line form")
    option = typer.Option(None, name, help=help_text, show_default=False)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=typing.Optional[kind]), parse


def config_params(cls: type, skip: Iterable[str] = ()) -> dict[str, tuple[inspect.Parameter, Callable]]:
    """{field: (typer parameter, parser)} for every field of config dataclass `cls` but `skip`."""
    hints, docs, skip = typing.get_type_hints(cls), field_docs(cls), set(skip)
    presets = set(getattr(cls, "PRESET_FIELDS", ()))
    return {f.name: _param(f, hints[f.name], docs.get(f.name, ""), f.name in presets)
            for f in dataclasses.fields(cls) if f.name not in skip}


def with_config(cls: type, skip: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Decorate a command taking `overrides: dict`: the command gains one option per field of `cls`
    (but `skip`) and receives the fields set on the command line, parsed, as `overrides`."""
    extra = config_params(cls, skip)

    def decorate(fn: Callable) -> Callable:
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(fn).parameters.values()
               if p.name != OVERRIDES]
        clash = sorted({p.name for p in own} & set(extra))
        if clash:
            raise ConfigError(f"{fn.__name__}: options {clash} are also fields of {cls.__name__}; drop them from "
                              "the command (the config's options cover them)")

        @functools.wraps(fn)
        def command(**kw):
            overrides = {}
            for name, (_, parse) in extra.items():
                value = kw.pop(name)
                if value is not None:
                    overrides[name] = parse(value)
            return fn(**kw, **{OVERRIDES: overrides})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + [p for p, _ in extra.values()]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__                  # typer must read the new signature, not fn's
        return command
    return decorate
