"""Resumable runs: every finished stage of `run_recipe` saved as JSON under <run>/state/ (written atomically),
so `repedit run --resume DIR` recomputes nothing that was saved.

    state/run.json       recipe hash (recipe.to_dict() less `source`), the recipe, its source, the command
    state/targets.json   the resolved targets: Fact records, names, texts, pool keys (`resolve` does not rerun)
    state/before.json    the "before" measurement and the original-model records that are JSON
    state/edit-NN.json   the NN-th [[edit]]'s whole report entry, or its refusal

Every file carries `format_version` and `repedit_version` (repedit.formats, kind "run-state"; run.json of
older runs held the version as `version`), checked when it is read back.

A fresh run also carries on with what it saved read back, so a resumed run sees exactly what an uninterrupted
one saw. What JSON cannot hold is recomputed on the original model (runner._restore_originals). Two runs of
one recipe and seed differ only in timing fields (`is_timing`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from repedit.errors import InputError
from repedit.formats import WRITES, check_format, stamped

VERSION = WRITES["run-state"]
FACT_LISTS = ("forget", "retain", "neighbours", "unrelated")
REFITTED = ("knownness", "benchmark_state")      # set by the first (before) measurement; recomputed on resume
ORIG_SAVED = ("quantisation", "extraction")      # JSON original-model records (the rest is recomputed)
#: wall-clock fields, and choices made by them (the fastest baseline at a level): they differ run to run
TIMING = frozenset({"seconds", "wall_seconds", "time", "elapsed_s", "time_ratio_to_baseline", "matched_baseline",
                    "matched_baseline_neighbours"})


def is_timing(key: str) -> bool:
    """Whether a report key holds wall-clock time (or a choice made by it): `TIMING` or `*_seconds`."""
    return key in TIMING or key.endswith("_seconds")


def without_timing(obj):
    """`obj` (a report or a part of one) with every timing field dropped, at any depth."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def _default(o):
    if hasattr(o, "tolist"):                      # numpy scalars and arrays, tensors
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    return str(o)


def plain(obj):
    """`obj` as it reads back from JSON (tuples → lists, numpy → numbers, other objects → str)."""
    return json.loads(json.dumps(obj, default=_default))


def write_atomic(path: Path, data) -> None:
    """JSON to `path` through a temporary file and a rename: a kill leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(data, indent=1, default=_default))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def recipe_hash(recipe) -> str:
    """sha256 of the recipe's settings (`to_dict()` without `source`, where it was read from)."""
    return hashlib.sha256(json.dumps(_settings(recipe), sort_keys=True, default=str).encode()).hexdigest()


def _settings(recipe) -> dict:
    return plain({k: v for k, v in recipe.to_dict().items() if k != "source"})


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b]) for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    return [] if a == b else [where.lstrip(".")]


def _rebuild(cls, d: dict):
    """A frozen dataclass from its asdict() read back from JSON (lists → tuples where the field is a tuple)."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) and str(f.type).startswith("tuple") else v
    return cls(**kw)


def _afresh(run_dir: Path) -> str:
    return f"start the run afresh: `repedit run RECIPE --out {run_dir} --force`"


class RunState:
    """The saved stages of one run directory (see the module docstring)."""

    def __init__(self, run_dir: Path, meta: dict):
        self.dir, self.meta = Path(run_dir) / "state", meta

    @classmethod
    def start(cls, run_dir: Path, recipe, command: str) -> RunState:
        meta = stamped("run-state", {"recipe_hash": recipe_hash(recipe), "recipe": _settings(recipe),
                                     "source": recipe.source, "command": command,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        state = cls(run_dir, meta)
        state.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(state.dir / "run.json", meta)
        return state

    @classmethod
    def open(cls, run_dir: Path, recipe=None) -> RunState:
        """The state of `run_dir`; `recipe` (if given) must be the one it was started with."""
        path = Path(run_dir) / "state" / "run.json"
        if not path.is_file():
            raise InputError(f"{run_dir} holds no saved run state ({path} is missing): nothing to resume; start "
                             f"the run afresh with `repedit run RECIPE --out {run_dir} --force`")
        meta = json.loads(path.read_text())
        check_format("run-state", meta, path, legacy="version", redo=_afresh(run_dir))
        if recipe is not None and recipe_hash(recipe) != meta["recipe_hash"]:
            changed = _differences(meta["recipe"], _settings(recipe))
            raise InputError(f"the recipe differs from the one {run_dir} was started with (changed: {changed}); "
                             f"resume with that recipe ({meta.get('source') or run_dir / 'recipe.toml'}), or start "
                             f"over with `repedit run RECIPE --out {run_dir} --force`")
        return cls(run_dir, meta)

    @property
    def command(self) -> str:
        return self.meta["command"]

    def _read(self, name: str):
        p = self.dir / name
        if not p.is_file():
            return None
        data = json.loads(p.read_text())
        check_format("run-state", data, p, redo=_afresh(self.dir.parent))
        return data

    def _write(self, name: str, data: dict) -> None:
        write_atomic(self.dir / name, stamped("run-state", data))

    def saved(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json") if p.stem != "run")

    # ----- targets
    def save_targets(self, res, recipe):
        """Save the resolved targets; returns them as a resumed run rebuilds them (live pool and benchmark)."""
        data = {"to_dict": res.to_dict(), "unsaved": []}
        for f in dataclasses.fields(res):
            v = getattr(res, f.name)
            if f.name in REFITTED or f.name in ("pool", "benchmark"):
                continue
            if f.name in FACT_LISTS:
                data[f.name] = [dataclasses.asdict(x) for x in v]
            elif f.name == "unknown_refs":
                data[f.name] = None if v is None else dataclasses.asdict(v)
            else:
                try:
                    data[f.name] = json.loads(json.dumps(v))
                except (TypeError, ValueError):
                    data["unsaved"].append(f.name)
        data["pool"] = None if res.pool is None else [k.key for k in res.pool.keys]
        data["has_benchmark"] = res.benchmark is not None
        data = plain(data)
        self._write("targets.json", data)
        return self._targets(data, recipe, live=res)

    def targets(self, recipe):
        """The saved targets rebuilt (None when not saved); pool and benchmark re-read from their files."""
        data = self._read("targets.json")
        return None if data is None else self._targets(data, recipe)

    def _targets(self, data: dict, recipe, live=None):
        from repedit.recipes.measure import KnownnessReferences, Resolved
        from repedit.suites import Fact

        if data["unsaved"]:
            raise InputError(f"the run's targets {data['unsaved']} could not be saved as JSON, so this run cannot "
                             "be resumed; start it afresh with --force")
        res, fields = Resolved(), {f.name for f in dataclasses.fields(Resolved)}
        for name, v in data.items():
            if name in FACT_LISTS:
                setattr(res, name, [_rebuild(Fact, d) for d in v])
            elif name == "unknown_refs":
                res.unknown_refs = None if v is None else _rebuild(KnownnessReferences, v)
            elif name in fields and name not in ("pool", "benchmark"):
                setattr(res, name, v)
        if live is not None:
            res.pool, res.benchmark = live.pool, live.benchmark
            return res
        t = recipe.targets
        if data["pool"] is not None:
            from repedit.suites.pools import load_pool, pool_from_records

            res.pool = (load_pool(t.pool) if t.pool else pool_from_records(t.pool_keys)).subset(data["pool"])
        if data["has_benchmark"]:
            from repedit.suites.formats import load_benchmark

            b = t.benchmark
            res.benchmark = load_benchmark(b["format"], b["path"], b.get("split", ""), b.get("limit"))
        if plain(res.to_dict()) != data["to_dict"]:
            raise InputError(f"the saved targets of {self.dir.parent} no longer rebuild (the pool or benchmark file "
                             "changed?); start the run afresh with --force")
        return res

    # ----- before
    def save_before(self, before: dict, orig: dict) -> tuple[dict, dict]:
        """Save the before measurement and the JSON original records; returns both as read back."""
        data = plain({"before": before, "orig": {k: orig[k] for k in ORIG_SAVED if k in orig}})
        self._write("before.json", data)
        return data["before"], data["orig"]

    def before(self) -> tuple[dict, dict] | None:
        data = self._read("before.json")
        return None if data is None else (data["before"], data["orig"])

    # ----- edits
    def save_edit(self, index: int, name: str, entry: dict, refused: bool = False) -> dict:
        """Save the index-th edit's report entry (or refusal); returns it as read back."""
        data = plain({"name": name, "refused": refused, "entry": entry})
        self._write(f"edit-{index:02d}.json", data)
        return data["entry"]

    def edit(self, index: int) -> dict | None:
        """{"name", "refused", "entry"} of the index-th edit, None when it has not finished."""
        return self._read(f"edit-{index:02d}.json")


def recipe_of(run_dir: Path):
    """The recipe a run was started with: its source file if it still exists, else run_dir/recipe.toml."""
    from repedit.recipes.schema import load_recipe

    meta = RunState.open(run_dir).meta
    for p in (meta.get("source"), Path(run_dir) / "recipe.toml"):
        if p and Path(p).is_file():
            return load_recipe(p)
    raise InputError(f"the recipe of {run_dir} is gone ({meta.get('source')!r}, no recipe.toml in the run); "
                     f"pass it: `repedit run RECIPE --resume {run_dir}`")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:                      # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss      # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class Journal:
    """journal.jsonl: one line per stage, with the time (appended to when a run resumes)."""

    def __init__(self, path: Path, echo=None, append: bool = False):
        self.path, self.echo, self.t0 = path, echo, time.perf_counter()
        if not append or not path.exists():
            path.write_text("")

    def log(self, stage: str, **info) -> None:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "elapsed_s": round(time.perf_counter() - self.t0, 2),
               "peak_rss_mb": peak_rss_mb(), "stage": stage} | info | {"format_version": WRITES["journal"]}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        if self.echo:
            self.echo(f"[{row['elapsed_s']:7.1f}s] {stage} " + " ".join(f"{k}={v}" for k, v in info.items()))
