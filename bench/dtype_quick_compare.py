"""fp32 vs bf16 on the CPU (issue 14.7): the quick-compare recipe run in both dtypes in one process,
same seed, same targets; prints the comparison side by side with the wall-time ratio and writes
bench/dtype_quick_compare.json. ROCR's key statistics are computed for both dtypes before timing
(they are cached per dtype), so the times compare the runs themselves.

    .venv/bin/python bench/dtype_quick_compare.py [--reuse=float32]   (reuse: read that dtype's finished run)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"forget_after": 0.05, "neighbours_after": 0.05, "unrelated_after": 0.05, "perplexity_after": 0.03}
COLUMNS = ("forget_before", "forget_after", "neighbours_after", "unrelated_after", "perplexity_after", "seconds")


def main(reuse: tuple[str, ...] = ()) -> None:
    """`reuse`: dtypes whose finished run directory (runs/dtype-<dtype>) is read instead of rerun."""
    import repedit
    from repedit.edits.rocr import ROCR, ROCRConfig
    from repedit.recipes.runner import run_recipe
    from repedit.recipes.schema import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "quick-compare.toml")
    rocr_cfg = next(e.config for e in recipe.edits if e.method == "rocr")
    for dtype in (torch.float32, torch.bfloat16):                 # warm the per-dtype key statistics
        if str(dtype).removeprefix("torch.") not in reuse:
            ROCR(repedit.load(recipe.model, dtype=dtype), ROCRConfig(**rocr_cfg))
    runs = {}
    for dtype in ("float32", "bfloat16"):
        run_dir = ROOT / "runs" / f"dtype-{dtype}"
        if dtype in reuse and (run_dir / "report.json").exists():      # a finished run of an earlier invocation
            report = json.loads((run_dir / "report.json").read_text())
        else:
            run_recipe(dataclasses.replace(recipe, dtype=dtype), run_dir, force=True,
                       echo=lambda *_a, **_k: None, command=f"bench/dtype_quick_compare.py ({dtype})")
            report = json.loads((run_dir / "report.json").read_text())
        runs[dtype] = {"wall_seconds": report["wall_seconds"], "reused": dtype in reuse,
                       "rows": {r["edit"]: {c: r[c] for c in COLUMNS} for r in report["comparison"]},
                       "refused": report.get("refused", {})}
    fp, bf = runs["float32"], runs["bfloat16"]
    checks = {}
    for edit, row in fp["rows"].items():
        if edit not in bf["rows"]:
            checks[edit] = {"bf16": "refused: " + bf["refused"].get(edit, {}).get("error", "missing")}
            continue
        for col, tol in TOLERANCE.items():
            a, b = row[col], bf["rows"][edit][col]
            diff = abs(a - b) / (abs(a) if col == "perplexity_after" else 1.0)
            checks[f"{edit}.{col}"] = {"fp32": a, "bf16": b, "diff": round(diff, 4), "tolerance": tol,
                                       "within": diff <= tol}
    out = {"runs": runs, "wall_ratio_fp32_over_bf16": round(fp["wall_seconds"] / bf["wall_seconds"], 2),
           "tolerance": TOLERANCE, "checks": checks, "threads": torch.get_num_threads()}
    (ROOT / "bench" / "dtype_quick_compare.json").write_text(json.dumps(out, indent=1))
    print("| edit | dtype | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for edit in fp["rows"]:
        for name, run in (("fp32", fp), ("bf16", bf)):
            r = run["rows"].get(edit)
            if r is None:
                print(f"| {edit} | {name} | refused: {run['refused'][edit]['error'][:90]}… |")
                continue
            print(f"| {edit} | {name} | " + " | ".join(f"{r[c]:.3f}" if c != "seconds" else f"{r[c]:.1f}"
                                                        for c in COLUMNS) + " |")
    print(f"wall: fp32 {fp['wall_seconds']} s, bf16 {bf['wall_seconds']} s, ratio {out['wall_ratio_fp32_over_bf16']}")
    bad = [k for k, v in checks.items() if not v.get("within", False)]
    print("all within tolerance" if not bad else f"outside tolerance: {bad}")


if __name__ == "__main__":
    import sys

    main(tuple(a.removeprefix("--reuse=") for a in sys.argv[1:] if a.startswith("--reuse=")))
