"""Versions of the files repedit writes and reads back. Each carries a top-level integer `format_version` and
the `repedit_version` that wrote it (`stamped`); every reader checks the version first (`check_format`) and
refuses one it cannot read with a `FormatVersionError` naming the file, the version, the versions this repedit
reads and the repedit that wrote it. Files written before format versions existed carry no field: they are
version 1 (a preset's or run state's older integer field, `format` / `version`, is read in its place).

    kind              file                                          written by
    report            <run>/report.json                             repedit.recipes.runner
    resolved          <run>/resolved.json (not read back)           repedit.recipes.runner
    run-state         <run>/state/*.json                            repedit.recipes.run_state
    journal           <run>/journal.jsonl, on every line (a log)    repedit.recipes.run_state
    export-manifest   <export>/manifest.json                        repedit.export.directory
    verification      <export>/verification.json                    repedit.export.certificate
    preset            repedit/models/presets/<model>.json           repedit.recipes.presets
    benchmark-score   `repedit benchmark score --out FILE`          repedit.cli.benchmark
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repedit.errors import FormatVersionError, InputError
from repedit.version import __version__

FIELD = "format_version"
#: the version each kind is written in now
WRITES: dict[str, int] = {"report": 1, "resolved": 1, "run-state": 1, "journal": 1, "export-manifest": 1,
                          "verification": 1, "preset": 1, "benchmark-score": 1}
#: the versions of each kind this repedit reads
READS: dict[str, tuple[int, ...]] = {kind: (1,) for kind in WRITES}


def stamped(kind: str, data: Mapping) -> dict:
    """`data` with `format_version` (this repedit's version of `kind`) and `repedit_version` first."""
    return {FIELD: WRITES[kind], "repedit_version": __version__, **data}


def writer_of(data: Mapping) -> str | None:
    """The repedit version that wrote `data`: its `repedit_version`, else what older files recorded
    (a report's `environment.repedit`, a certificate's `versions.repedit`)."""
    for found in (data.get("repedit_version"), (data.get("environment") or {}).get("repedit"),
                  (data.get("versions") or {}).get("repedit")):
        if isinstance(found, str) and found:
            return found
    return None


def format_version(data: Mapping, legacy: str | None = None):
    """The file's format version: `format_version`, else the `legacy` field, else 1 (written before versions)."""
    if FIELD in data:
        return data[FIELD]
    if legacy is not None and legacy in data:
        return data[legacy]
    return 1


def check_format(kind: str, data, where: str | Path, *, legacy: str | None = None, redo: str = "") -> int:
    """The format version of `data` (a `kind` file read from `where`) if this repedit reads it; else raises
    `FormatVersionError`. `legacy`: an older field that held the version; `redo`: how to write the file again
    with this repedit (named in the error)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where} holds a JSON {type(data).__name__}, not an object: it is not a repedit {kind} file")
    found, reads = format_version(data, legacy), READS[kind]
    if isinstance(found, int) and not isinstance(found, bool) and found in reads:
        return found
    writer = writer_of(data)
    by = f"repedit {writer}" if writer else "a repedit that did not record its version"
    again = f"re-run with this version ({redo})" if redo else "re-run with this version"
    newer = isinstance(found, int) and not isinstance(found, bool) and found > max(reads)
    fix = (f"upgrade repedit to ≥ {writer or 'the version that wrote it'} to read it, or {again}" if newer
           else again)
    raise FormatVersionError(
        f"{where} is a {kind} file of format_version {found!r}, written by {by}; this repedit ({__version__}) reads "
        f"format_version {', '.join(map(str, reads))}: {fix}", path=str(where), found=found, reads=reads,
        writer=writer)


__all__ = ["FIELD", "READS", "WRITES", "check_format", "format_version", "stamped", "writer_of"]
