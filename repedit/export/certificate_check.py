"""`verify_export(dir)`: does an export still carry what its certificate claims? (see repedit.export.certificate)

Hashes first (always), then, with `recompute=True`, the cheap claims re-measured on the export loaded with
plain transformers: the forget facts' and neighbours' answer probability per form after the edit, and — after
`repedit.export.revert` — before it. Every disagreement is one `Mismatch` line naming the file, tensor or claim.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from repedit.export.directory import ExportError, read_manifest
from repedit.formats import check_format

VERIFICATION = "verification.json"
CARD = "README.md"
SIDE_FILES = ("edits.safetensors", "originals.safetensors")      # not model weights
TOLERANCE = {"float32": (1e-4, 1e-3), "float16": (5e-3, 2e-2), "bfloat16": (2e-2, 5e-2)}   #: (atol, rtol)
_CHUNK = 1 << 24


# ---------------------------------------------------------------- hashes

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def safetensors_hashes(path: str | Path) -> dict[str, str]:
    """sha256 of every tensor's stored bytes in a safetensors file, read at its header's offsets (no tensor is
    built). safetensors stores raw little-endian C-order bytes, so this equals `tensor_sha256` of the loaded
    tensor (repedit.edits.base), the hash manifest.json records."""
    out = {}
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            fh.seek(8 + n + start)
            h, left = hashlib.sha256(), end - start
            while left:
                block = fh.read(min(_CHUNK, left))
                if not block:
                    raise ExportError(f"{path} is truncated inside tensor {name}; re-export the model")
                h.update(block)
                left -= len(block)
            out[name] = h.hexdigest()
    return out


def weight_files(export_dir: Path) -> list[Path]:
    """The model's safetensors files (one, or the shards), not edits/originals."""
    return sorted(p for p in Path(export_dir).glob("*.safetensors") if p.name not in SIDE_FILES)


def hashed_files(export_dir: Path) -> list[Path]:
    """Every file the certificate hashes: all but itself, the card and dot-files (e.g. the hub's .gitattributes)."""
    return sorted(p for p in Path(export_dir).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in (VERIFICATION, CARD))


def export_hashes(export_dir: str | Path) -> dict:
    """{"files": {name: {"sha256", "bytes"}}, "tensors": {weight file: {tensor: sha256}}} of an export."""
    export_dir = Path(export_dir)
    files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in hashed_files(export_dir)}
    return {"files": files, "tensors": {p.name: safetensors_hashes(p) for p in weight_files(export_dir)}}


def fact_from_record(rec: Mapping):
    """A Fact from its verification.json record."""
    from repedit.suites import Fact

    known = {f.name for f in fields(Fact)}
    return Fact(**{k: (tuple(v) if k == "aliases" else v) for k, v in rec.items() if k in known})


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class Mismatch:
    """One disagreement between an export and its certificate."""

    kind: str        #: "file", "tensor", "claim", "revert", or "record" (verification.json ≠ manifest.json)
    name: str        #: the file, tensor or claim (e.g. "after.forget.blank")
    claimed: str
    found: str
    detail: str = ""

    def __str__(self) -> str:
        return (f"{self.kind} {self.name}: claimed {self.claimed}, found {self.found}"
                + (f" ({self.detail})" if self.detail else ""))


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    mismatches: tuple[Mismatch, ...]
    checked: dict            #: how many files, tensors and claims were compared
    notes: tuple[str, ...]   #: what could not be checked, and why
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def lines(self) -> list[str]:
        return [str(m) for m in self.mismatches]


def read_verification(path: str | Path) -> dict:
    """An export's verification.json, its format version checked (repedit.formats)."""
    path = Path(path)
    if not (path / VERIFICATION).exists():
        raise ExportError(f"{path} has no {VERIFICATION}; write it with repedit.export.certificate.write_certificate "
                          "(or `repedit certify RUN_DIR` for a run directory with an export)")
    try:
        record = json.loads((path / VERIFICATION).read_text())
    except ValueError as exc:
        raise ExportError(f"{path / VERIFICATION} is not valid JSON ({exc}); it was edited by hand") from None
    check_format("verification", record, path / VERIFICATION,
                 redo="write the certificate again: `repedit certify RUN_DIR` (write_certificate)")
    return record


def _short(sha: str | None) -> str:
    return f"sha256 {sha[:16]}…" if sha else "nothing"


# ---------------------------------------------------------------- checks

def _check_files(d: Path, record: dict, out: list[Mismatch]) -> int:
    claimed = record["hashes"]["files"]
    present = {p.name: p for p in hashed_files(d)}
    for name, info in claimed.items():
        p = present.get(name)
        sha = file_sha256(p) if p else None
        if sha != info["sha256"]:
            out.append(Mismatch("file", name, _short(info["sha256"]), _short(sha) if p else "no such file"))
    for name in sorted(set(present) - set(claimed)):
        out.append(Mismatch("file", name, "no such file", _short(file_sha256(present[name])),
                            "a file the certificate does not list"))
    return len(claimed)


def _check_tensors(d: Path, record: dict, manifest: dict, out: list[Mismatch]) -> int:
    touched, n = manifest.get("tensors") or {}, 0
    for name, info in (record.get("touched_tensors") or {}).items():
        if touched.get(name, {}).get("sha256_after") != info.get("sha256_after"):
            out.append(Mismatch("record", name, _short(info.get("sha256_after")),
                                _short(touched.get(name, {}).get("sha256_after")),
                                "verification.json and manifest.json disagree on the edited tensor"))
    for fname, claimed in record["hashes"]["tensors"].items():
        found = safetensors_hashes(d / fname) if (d / fname).exists() else {}
        for name in sorted(set(claimed) | set(found)):
            c, f = claimed.get(name), found.get(name)
            n += 1
            if c != f:
                where = f"{name} [touched by the edit]" if name in touched else name
                out.append(Mismatch("tensor", where, _short(c), _short(f), f"in {fname}"))
    stored = {k: v for fname in record["hashes"]["tensors"] for k, v in record["hashes"]["tensors"][fname].items()}
    for name, info in touched.items():
        if name not in stored:
            out.append(Mismatch("tensor", f"{name} [touched by the edit]", _short(info["sha256_after"]),
                                "no such tensor", "not in the weight files"))
        elif stored[name] != info["sha256_after"]:
            out.append(Mismatch("record", f"{name} [touched by the edit]", _short(info["sha256_after"]),
                                _short(stored[name]), "manifest.json's sha256_after ≠ the certified weights"))
    if touched and (d / "originals.safetensors").exists():
        orig = safetensors_hashes(d / "originals.safetensors")
        for name, info in touched.items():
            n += 1
            if orig.get(name) != info["sha256_before"]:
                out.append(Mismatch("tensor", f"{name} [original]", _short(info["sha256_before"]),
                                    _short(orig.get(name)), "in originals.safetensors: revert would not restore it"))
    return n


def _close(got: float, claimed: float, dtype: str) -> tuple[bool, float]:
    atol, rtol = TOLERANCE.get(dtype, TOLERANCE["float32"])
    bound = atol + rtol * abs(claimed)
    return abs(got - claimed) <= bound, bound


def _compare(handle, record: dict, state: str, dtype: str, out: list[Mismatch]) -> int:
    """Re-measure every claimed per-form probability of `state` ("after" or "before") on `handle`."""
    from repedit.verify.recall import recall_probability

    n = 0
    for group, spec in (record.get("checks") or {}).items():
        facts = [fact_from_record(r) for r in spec["facts"]]
        claimed = ((record["measurements"].get(state) or {}).get(group)) or {}
        got_forms = {}
        for form in spec["forms"]:
            got_forms[form] = recall_probability(handle, facts, [form])
            c = (claimed.get("forms") or {}).get(form, {}).get("probability")
            items = [(f"{state}.{group}.{form}", got_forms[form], c)]
            if form == spec["forms"][-1]:
                items.append((f"{state}.{group}.mean_probability", sum(got_forms.values()) / len(got_forms),
                              claimed.get("mean_probability")))
            for name, got, c in items:
                n += 1
                ok, bound = _close(got, c, dtype) if isinstance(c, (int, float)) else (False, 0.0)
                if not ok:
                    out.append(Mismatch("claim", name, f"{c:.6g}" if isinstance(c, (int, float)) else "nothing",
                                        f"{got:.6g}", f"|Δ| {abs(got - c):.3g} > tolerance {bound:.3g} ({dtype})"
                                        if isinstance(c, (int, float)) else "no claimed number"))
    return n


def _recompute(d: Path, record: dict, manifest: dict, device_map, out: list[Mismatch], notes: list[str]) -> int:
    import torch

    from repedit.edits.base import EditError
    from repedit.export.directory import revert
    from repedit.forward.weights import tensor_sha256
    from repedit.models.loader import load_hf

    if not record.get("checks"):
        notes.append("no facts recorded (a pool or benchmark run without the run's facts): claims not re-measured")
        return 0
    dtype = record.get("dtype") or "float32"
    handle = load_hf(d, model_id=f"export:{d.name}", dtype=getattr(torch, dtype), device_map=device_map)
    n = _compare(handle, record, "after", dtype, out)
    try:
        revert(d, handle.model)
    except EditError as exc:
        out.append(Mismatch("revert", "originals.safetensors", "restores the base model", "refused", str(exc)))
        return n
    params = dict(handle.model.named_parameters())
    for name, info in (manifest.get("tensors") or {}).items():
        if tensor_sha256(params[name]) != info["sha256_before"]:
            out.append(Mismatch("tensor", f"{name} [reverted]", _short(info["sha256_before"]),
                                _short(tensor_sha256(params[name])), "revert did not restore it"))
    return n + _compare(handle, record, "before", dtype, out)


def verify_export(path: str | Path, *, recompute: bool = True, device_map: str | dict | None = None) -> VerifyResult:
    """Check an export against its verification.json and manifest.json (module doc); `recompute=False` checks
    the hashes only; `device_map` places the re-measuring model (default: CPU)."""
    t0 = time.perf_counter()
    d = Path(path)
    manifest = read_manifest(d)
    record = read_verification(d)
    out: list[Mismatch] = []
    notes: list[str] = list(record.get("notes") or ())
    checked = {"files": _check_files(d, record, out), "tensors": _check_tensors(d, record, manifest, out),
               "claims": _recompute(d, record, manifest, device_map, out, notes) if recompute else 0}
    if not recompute:
        notes.append("claims not re-measured (--no-recompute)")
    return VerifyResult(d, tuple(out), checked, tuple(notes), round(time.perf_counter() - t0, 2))
