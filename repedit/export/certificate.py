"""The erasure certificate of an export, and the check that the weights still carry what it claims.

`write_certificate(export_dir, report, edit_name, recipe_text)` adds two files to an export (repedit.export.directory):
- verification.json: every measurement the run made of that edit (the `before` and its `after` measurements:
  forms, neighbours, unrelated, perplexity, knownness, lm-eval, benchmark, the signature per depth of pool
  runs), its attacks and comparison row, the seed, package versions, the recipe text and the resolved recipe,
  the edit configs, the Fact records of the forget facts and neighbours (so the claims can be re-measured
  without the suite), and hashes: sha256 of every file of the export (except verification.json and
  README.md), of every tensor of the model's weight files, and the touched tensors' before/after sha256
  (manifest.json);
- README.md: a Hugging Face model card (repedit.export.model_card).
verification.json carries its `format_version` (repedit.formats); `read_verification` checks it.

`verify_export(dir)` (repedit.export.certificate_check, re-exported here) checks them:
1. hashes (always): every file and every stored tensor against verification.json, the touched tensors against
   manifest.json's `sha256_after`, originals.safetensors against `sha256_before`; a missing or extra file or
   tensor is a mismatch too (dot-files, e.g. the hub's .gitattributes, are ignored);
2. claims (`recompute=True`): the export is loaded with plain transformers (`load_hf`) in the run's dtype, the
   answer probability of the forget facts and of the neighbours is re-measured per form
   (`repedit.verify.recall.recall_probability`, the number the run reported) and compared with the claimed
   `after` numbers; then `repedit.export.directory.revert` puts the originals back and the `before` numbers are
   compared the same way (which also checks that the revert restores the claimed `sha256_before`).

Tolerance of a re-measured number: |recomputed − claimed| ≤ atol + rtol·|claimed|, (atol, rtol) by the run's
dtype (TOLERANCE): float32 (1e-4, 1e-3) — the same machine reproduces the numbers to ~1e-7, CPU vs GPU kernels
to ~1e-5; float16 (5e-3, 2e-2) and bfloat16 (2e-2, 5e-2), whose logits differ between devices in their last
bits. Probabilities are in [0, 1], so atol dominates for small ones.

Nothing is pickled; tensor hashes are read from the safetensors byte ranges without building tensors.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from repedit.errors import InputError
from repedit.export.certificate_check import (
    CARD,
    TOLERANCE,
    VERIFICATION,
    Mismatch,
    VerifyResult,
    export_hashes,
    read_verification,
    verify_export,
)
from repedit.export.directory import read_manifest
from repedit.formats import check_format, stamped

__all__ = ["TOLERANCE", "Certificate", "Mismatch", "VerifyResult", "certify_run", "read_verification",
           "verify_export", "write_certificate"]

FORMAT = "repedit-verification/1"
PACKAGES = ("repedit", "torch", "transformers", "huggingface_hub", "safetensors", "numpy")


# ---------------------------------------------------------------- writing

@dataclass(frozen=True)
class Certificate:
    verification: Path
    card: Path
    seconds: float


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def fact_record(fact) -> dict:
    return asdict(fact)


def rebuild_facts(report: dict) -> dict[str, list]:
    """The forget facts and neighbours of a fact run, from its recipe's suite (or inline facts) by subject, as
    `repedit.recipes.measure.resolve` picked them; {} for pool and benchmark runs (pass `facts` instead)."""
    spec, targets = (report.get("recipe") or {}).get("targets") or {}, report.get("targets") or {}
    if spec.get("benchmark") or not targets.get("forget"):
        return {}
    from repedit.suites import suite_facts

    facts = suite_facts(spec.get("suite", "capitals"), tuple(spec.get("facts") or ()), spec.get("templates") or {})
    by = {f.subject: f for f in facts}
    return {g: [by[s] for s in targets.get(g) or () if s in by] for g in ("forget", "neighbours")}


def _checks(after: dict, facts: Mapping[str, Sequence], given: bool) -> tuple[dict, list[str]]:
    """What verify_export re-measures: per group its forms and Fact records (only where the run measured it)."""
    out, notes = {}, []
    for group in ("forget", "neighbours"):
        m, fs = after.get(group), list(facts.get(group) or ())
        if not m:
            continue
        n = next(iter(m["forms"].values()))["n"]
        if len(fs) != n:
            msg = f"{group}: {len(fs)} facts for {n} measured"
            if given:
                raise InputError(f"the facts passed for {msg}; pass the run's resolved facts (Resolved.{group})")
            notes.append(f"{msg} (rebuilt from the recipe): not re-measurable")
            continue
        out[group] = {"forms": list(m["forms"]), "facts": [fact_record(f) for f in fs]}
    return out, notes


def _seeds(report: dict, config: dict) -> dict:
    return {"recipe": (report.get("recipe") or {}).get("seed"),
            **{k: v for k, v in (config or {}).items() if "seed" in k.lower()}}


def verification_record(export_dir: Path, manifest: dict, report: dict, edit_name: str,
                        recipe_text: str | None, facts: Mapping[str, Sequence] | None) -> dict:
    edit = report["edits"][edit_name]
    given = facts is not None
    checks, notes = _checks(edit["after"], facts if given else rebuild_facts(report), given)
    row = next((r for r in report.get("comparison") or () if r.get("edit") == edit_name), None)
    recipe = report.get("recipe") or {}
    man_edits = [{k: v for k, v in e.items() if k != "deltas"} |
                 {"deltas": [{k: d[k] for k in ("param", "kind", "rank") if k in d} for d in e["deltas"]]}
                 for e in manifest.get("edits") or ()]
    return stamped("verification", {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edit": edit_name, "method": edit.get("method"), "family": edit.get("family"), "source": edit.get("source"),
        "base_model": manifest.get("base_model"), "model": recipe.get("model"), "dtype": recipe.get("dtype", "float32"),
        "seeds": _seeds(report, edit.get("config")), "versions": package_versions(),
        "environment_at_run": report.get("environment"), "command": report.get("command"),
        "recipe": {"text": recipe_text, "resolved": recipe}, "targets": report.get("targets"),
        "edit_config": edit.get("config"), "manifest_edits": man_edits,
        "measurements": {"before": report.get("before"), "after": edit.get("after"), "attacks": edit.get("attacks"),
                         "comparison": row, "rank": edit.get("rank"), "seconds": edit.get("seconds"),
                         "stats": edit.get("stats")},
        "checks": checks, "facts_source": "the run's resolved targets" if given else "rebuilt from the recipe",
        "notes": notes, "touched_tensors": manifest.get("tensors") or {},
        "export_check": manifest.get("check"), "hashes": export_hashes(export_dir),
        "tolerance": {"rule": "|recomputed - claimed| <= atol + rtol * |claimed|",
                      "atol_rtol_by_dtype": {k: list(v) for k, v in TOLERANCE.items()}},
        "verify": "repedit verify-export <this directory>",
    })


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_certificate(export_dir: str | Path, report: dict, edit_name: str, recipe_text: str | None = None, *,
                      facts: Mapping[str, Sequence] | None = None) -> Certificate:
    """Write verification.json and README.md into `export_dir` (see the module doc). `report`: the run's
    report.json; `edit_name`: the exported edit; `facts`: {"forget": [Fact], "neighbours": [Fact]} as the run
    resolved them (default: rebuilt from the recipe's suite by subject)."""
    from repedit.export.model_card import model_card

    t0 = time.perf_counter()
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    check_format("report", report, "the report given to write_certificate", redo="`repedit run RECIPE --force`")
    if edit_name not in (report.get("edits") or {}):
        raise InputError(f"edit {edit_name!r} is not in the report; valid: {sorted(report.get('edits') or {})}")
    report = json.loads(json.dumps(report, default=str))        # the numbers exactly as report.json holds them
    record = verification_record(export_dir, manifest, report, edit_name, recipe_text, facts)
    _write(export_dir / VERIFICATION, json.dumps(record, indent=1, default=str) + "\n")
    _write(export_dir / CARD, model_card(record))
    return Certificate(export_dir / VERIFICATION, export_dir / CARD, round(time.perf_counter() - t0, 2))


def certify_run(run_dir: str | Path, report: dict, *, facts: Mapping[str, Sequence] | None = None
                ) -> Certificate | None:
    """The certificate of a run's export (run_dir/export), for the edit its recipe exports; None when the run
    exported nothing. The recipe text is run_dir/recipe.toml when the run copied one."""
    run_dir = Path(run_dir)
    name = (report.get("recipe") or {}).get("export")
    export_dir = run_dir / "export"
    if not name or name not in (report.get("edits") or {}) or not (export_dir / "manifest.json").exists():
        return None
    text = (run_dir / "recipe.toml").read_text() if (run_dir / "recipe.toml").exists() else None
    return write_certificate(export_dir, report, name, text, facts=facts)
