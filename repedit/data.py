"""Where repedit's data lives: probes/ (fact suites, pools, text corpora) and saes/ (trained SAEs).

Both folders sit beside repedit/ in a checkout and travel inside the wheel as package data
(`repedit/_data/probes`, `repedit/_data/saes`; pyproject.toml's force-include). A folder is looked
for, in order:

1. an explicit setting: `$REPEDIT_PROBES` (the probes folder itself), then `$REPEDIT_DATA` (a folder
   holding probes/ and/or saes/; a kind it lacks falls through to 2 and 3). A setting that names no
   folder is an error (`DataNotFoundError` naming it), never silently skipped;
2. the checkout's folder, when repedit runs from a source tree (pyproject.toml beside repedit/);
3. the package data installed with the wheel.

Relative SAE names (`saes/<dir>` in presets and recipes, or just `<dir>`) that do not exist relative
to the working directory are looked up in every saes/ folder of that list (`resolve_sae`).
"""

from __future__ import annotations

import os
from pathlib import Path

from repedit.errors import ModelNotFoundError, ReprEditError

KINDS = ("probes", "saes")
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"     #: where the wheel puts probes/ and saes/
CHECKOUT = Path(__file__).resolve().parents[1]                #: the source tree, when there is one


class DataNotFoundError(ReprEditError, FileNotFoundError):
    """A data folder (probes/, saes/) is not where a setting says, or is nowhere at all."""


def _settings(kind: str) -> list[tuple[str, Path]]:
    """(how it was set, folder) of the explicit settings for `kind` (checked: each names a folder)."""
    out = []
    if kind == "probes" and os.environ.get("REPEDIT_PROBES"):
        path = Path(os.environ["REPEDIT_PROBES"]).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"$REPEDIT_PROBES is set, but {path} is not a folder: point it at a "
                                    "probes folder (facts/, text/, memorised/), or unset it to use the "
                                    "probes shipped with repedit")
        out.append(("$REPEDIT_PROBES", path))
    if os.environ.get("REPEDIT_DATA"):
        root = Path(os.environ["REPEDIT_DATA"]).expanduser()
        if not root.is_dir():
            raise DataNotFoundError(f"$REPEDIT_DATA is set, but {root} is not a folder: point it at a "
                                    "folder holding probes/ and/or saes/, or unset it to use the data "
                                    "shipped with repedit")
        if (root / kind).is_dir():
            out.append(("$REPEDIT_DATA", root / kind))
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; valid: {list(KINDS)}")


def is_checkout() -> bool:
    """True when repedit runs from a source tree (not an installed wheel)."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "repedit" / "__init__.py").is_file()


def data_dirs(kind: str) -> list[tuple[str, Path]]:
    """Every existing (origin, folder) of `kind` ("probes" or "saes"), first = the one used. Raises
    `DataNotFoundError` naming the setting when an explicit setting names no folder."""
    _check_kind(kind)
    found = _settings(kind)
    if is_checkout() and (CHECKOUT / kind).is_dir():
        found.append(("checkout", CHECKOUT / kind))
    if (PACKAGE_DATA / kind).is_dir():
        found.append(("package data", PACKAGE_DATA / kind))
    return found


def data_dir(kind: str) -> Path:
    """The folder of `kind` ("probes" or "saes") in use (see the module doc for the order)."""
    found = data_dirs(kind)
    if not found:
        raise DataNotFoundError(
            f"no {kind}/ folder: not in the checkout ({CHECKOUT / kind}) nor in the installed package "
            f"({PACKAGE_DATA / kind}); set REPEDIT_DATA to a folder holding {kind}/"
            + (" (or REPEDIT_PROBES to the probes folder itself)" if kind == "probes" else "")
            + ", or reinstall repedit from a wheel built with its data")
    return found[0][1]


def describe(kind: str) -> str:
    """"<folder> (<origin>)" of the folder in use, for messages."""
    found = data_dirs(kind)
    return f"{found[0][1]} ({found[0][0]})" if found else f"no {kind}/ folder (set REPEDIT_DATA)"


def find_sae(name: str | Path, base: str | Path | None = None) -> Path | None:
    """The SAE directory (holding cfg.json, absolute) `name` means, or None: `name` itself (absolute, or
    relative to `base`, default the working directory), else `saes/<dir>` or `<dir>` looked up in
    every saes/ folder of `data_dirs("saes")`, in order."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if (path / "cfg.json").is_file():
        return path.resolve()
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    rest = Path(*rel.parts[1:]) if rel.parts[0] == "saes" and len(rel.parts) > 1 else rel
    for _, folder in data_dirs("saes"):
        if (folder / rest / "cfg.json").is_file():
            return folder / rest
    return None


def resolve_sae(name: str | Path, base: str | Path | None = None) -> Path:
    """`find_sae`, raising `ModelNotFoundError` (where it looked, the settings) when nothing matches."""
    found = find_sae(name, base)
    if found is not None:
        return found
    try:
        where = [f"{p} ({how})" for how, p in data_dirs("saes")]
    except DataNotFoundError as exc:
        where = [str(exc)]
    have = sorted({c.parent.name for _, p in _safe_dirs("saes") for c in p.glob("*/cfg.json")})
    raise ModelNotFoundError(
        f"no SAE directory {str(name)!r} (no cfg.json there"
        + (f" relative to {base}" if base is not None else "")
        + f"); looked in {where or 'no saes/ folder'}; shipped/known SAEs: {have}. Pass a directory holding "
        "cfg.json, `saes/<name>`, or set REPEDIT_DATA to a folder holding saes/<name>")


def _safe_dirs(kind: str) -> list[tuple[str, Path]]:
    try:
        return data_dirs(kind)
    except DataNotFoundError:
        return []


__all__ = ["DataNotFoundError", "KINDS", "PACKAGE_DATA", "data_dir", "data_dirs", "describe", "find_sae",
           "is_checkout", "resolve_sae"]
