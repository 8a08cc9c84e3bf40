"""Old code vs new code on the same inputs, in one job: per-stage time ratios and the numbers each computed.

The old tree is a git worktree of `--old` (default: 6d49107, the last commit before issue 18's speed work);
each stage runs in a fresh worker process per tree (`bench/workers/speed_worker.py`, which imports repedit from
the tree it is given), old then new, on the default model (smollm2-135m) with the same thread count.
Stages (the compare recipe's targets: France, Japan, Germany, Italy; 10 retain; 12 neighbours; 20 unrelated):

    measure    one model-state measurement (5 forms + neighbours + unrelated + perplexity + knownness),
               the second call (the first warms caches)
    rocr       the four ROCR edits once their key statistics are cached (the second build)
    sae-align  SAE unknown-alignment of France (one target, the recipe default)
    sae-align-4  the four targets as a compare builds them (seconds per target; they share reference codes)
    monitor    one check of the trained baselines' monitor (forget + neighbours answer probability)
    attacks    one round of a compare run's attacks on ROCR's edits (prefixes, trace detection, relearning)
    mrp        one MRP task (the four forget facts)
    kn         knowledge neurons of France's capital fact
    ga, npo    seconds per training step of the compare recipe's GA / NPO (every down_proj; 5 steps, no stop)
    rmu        seconds per training step of its RMU (10 steps)
    relearn    the relearning attack of a compare run (10 steps, every weight), with the worker's peak memory

Prints a table (old s, new s, old/new, largest relative difference of the numbers) and writes
bench/speed.json; exits non-zero when a stage's numbers differ by more than `--tolerance` (relative, default 1e-3:
the largest seen from float-order changes is 6e-4, SAE-align's final loss terms), so a ratio is only reported
beside the same numbers. CPU seconds (process time) are reported beside wall seconds: on a shared machine they
are the steadier measure. `python bench/speed.py [--stages measure,rocr] [--threads 2] [--old REF]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("measure", "rocr", "sae-align", "sae-align-4", "mrp", "kn", "ga", "npo", "rmu", "relearn", "monitor",
          "attacks")


def _worktree(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="repedit-old-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), ref], check=True,
                   capture_output=True)
    return path


def _run(tree: Path, stage: str, threads: int) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "workers" / "speed_worker.py"), str(tree), stage, str(out),
                    str(threads)], check=True, env=env)
    return json.loads(out.read_text())


def _max_rel_diff(a, b) -> float:
    """Largest relative difference between two nested JSON values of the same shape (inf if shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((_max_rel_diff(a[k], b.get(k)) for k in a), default=0.0) if a.keys() == b.keys() else float("inf")
    if isinstance(a, list) and isinstance(b, list):
        return max((_max_rel_diff(x, y) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str):
        return 0.0 if a == b else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) / max(abs(a), abs(b), 1e-12) if a != b else 0.0
    return 0.0 if a == b else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="6d49107")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "speed.json"))
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="largest relative difference of a stage's numbers that counts as the same numbers")
    args = ap.parse_args()
    old_tree = _worktree(args.old)
    new_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    rows = {}
    try:
        for stage in args.stages.split(","):
            old, new = _run(old_tree, stage, args.threads), _run(ROOT, stage, args.threads)
            rows[stage] = {"old": old, "new": new, "ratio_wall": old["seconds"] / new["seconds"],
                           "ratio_cpu": old["cpu_seconds"] / new["cpu_seconds"],
                           "numbers_max_rel_diff": _max_rel_diff(old["numbers"], new["numbers"])}
            rows[stage]["numbers_same"] = rows[stage]["numbers_max_rel_diff"] <= args.tolerance
            r = rows[stage]
            print(f"{stage:10s} old {old['seconds']:7.1f}s ({old['cpu_seconds']:7.1f} cpu)  new {new['seconds']:7.1f}s "
                  f"({new['cpu_seconds']:7.1f} cpu)  old/new {r['ratio_wall']:.2f} wall {r['ratio_cpu']:.2f} cpu  "
                  f"numbers max rel diff {r['numbers_max_rel_diff']:.2g}  peak MB {old.get('peak_rss_mb')} -> "
                  f"{new.get('peak_rss_mb')}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
    for r in rows.values():
        r |= {"old_ref": args.old, "new_commit": new_commit, "threads": args.threads}
    out = Path(args.out)
    kept = json.loads(out.read_text()).get("stages", {}) if out.exists() else {}   # stages not rerun stay
    for r in kept.values():
        r.setdefault("new_commit", json.loads(out.read_text()).get("new"))
    out.write_text(json.dumps({"old": args.old, "threads": args.threads, "stages": kept | rows}, indent=1))
    print(f"wrote {args.out}")
    changed = [s for s, r in rows.items() if not r["numbers_same"]]
    if changed:             # a speed-up counts only with the same numbers: the bench fails otherwise
        sys.exit(f"numbers changed beyond --tolerance {args.tolerance:g} in: {', '.join(changed)}")


if __name__ == "__main__":
    main()
