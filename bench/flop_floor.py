"""How fast could it be? The floating-point work of a stage, counted, against this machine's matmul throughput.

Counts the matmul FLOPs (forward and backward: `torch.utils.flop_counter`) of
    sae-align   SAE unknown-alignment of one compare target (France), the recipe default: one training step
                (objective + backward) as the difference of a 3-step and a 1-step build, and the whole build
                (setup + 25 steps + the measuring pass);
    measure     one model-state measurement of the compare recipe (the second call);
    ga          one training step of the compare recipe's GA (the difference of a 6-step and a 2-step build, / 4);
measures the sustained throughput of this machine's matmuls at the model's own shapes (2 threads, fp32), and
prints the floor = FLOPs / the best of those rates beside a timed run. A stage whose floor is near its goal
cannot meet the goal with the same arithmetic, however its code is arranged. `python bench/flop_floor.py
[--stages sae-align,measure,ga] [--threads 2] [--out bench/flop_floor.json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "workers"))
sys.path.insert(0, str(ROOT.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _flops(fn) -> tuple[float, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return float(counter.get_total_flops()), out


def _best_gflops(d_model: int, d_ff: int, vocab: int, tokens: int = 256) -> dict[str, float]:
    """Sustained GFLOP/s of the model's forward matmul shapes at `tokens` rows: each shape repeated for ≈ 0.5 s,
    three times; the best of the three (a single product's time swings by up to 1.7× on this shared machine)."""
    out = {}
    for m, k, n in ((tokens, d_model, d_ff), (tokens, d_ff, d_model), (tokens, d_model, d_model),
                    (tokens, d_model, vocab)):
        a, b = torch.randn(m, k, device="cpu"), torch.randn(k, n, device="cpu")
        a @ b
        t = time.perf_counter()
        a @ b
        reps = max(1, int(0.5 / max(time.perf_counter() - t, 1e-6)))
        rates = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            rates.append(2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
        out[f"{m}x{k}x{n}"] = max(rates)
    return out


def sae_align_stage() -> dict:
    from bench_common import builder as _build
    from bench_common import setup

    handle, _, _ = setup("sae-align")
    cfg = handle.model.config
    rates = _best_gflops(cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size)
    f1, _ = _flops(_build("sae-align", 1, steps=1))
    f3, _ = _flops(_build("sae-align", 1, steps=3))
    step = (f3 - f1) / 2
    from repedit.edits.sae_align import SAEAlignConfig

    n = SAEAlignConfig().steps
    total = f1 + (n - 1) * step
    build = _build("sae-align", 1)
    t = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - t
    best = max(rates.values())
    return {"flops_per_step": step, "flops_per_target": total, "steps": n, "matmul_gflops": rates,
            "floor_seconds": total / best / 1e9, "floor_seconds_at_median_shape":
                total / sorted(rates.values())[len(rates) // 2] / 1e9,
            "measured_seconds": seconds, "final": built[0].stats["final"]}


def measure_stage() -> dict:
    from bench_common import setup

    from repedit.recipes.measure import measure_facts

    handle, recipe, res = setup()
    cfg = handle.model.config
    rates = _best_gflops(cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size)
    measure_facts(handle, res, recipe)                               # warm: tokenizer, caches, knownness fit
    flops, _ = _flops(lambda: measure_facts(handle, res, recipe))
    t = time.perf_counter()
    measure_facts(handle, res, recipe)
    seconds = time.perf_counter() - t
    best = max(rates.values())
    return {"flops": flops, "matmul_gflops": rates, "floor_seconds": flops / best / 1e9,
            "measured_seconds": seconds}


def ga_stage() -> dict:
    """One training step of the compare recipe's GA (every down_proj; 3 forms of 4 forget + 10 retain facts)."""
    from bench_common import builder, setup

    handle, _, _ = setup("ga")
    cfg = handle.model.config
    rates = _best_gflops(cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size)
    f1, _ = _flops(builder("ga", steps=1, stop_at=0.0))
    f3, _ = _flops(builder("ga", steps=3, stop_at=0.0))
    step = (f3 - f1) / 2
    seconds = {}
    for n in (2, 6, 2):                                              # the first 2-step build warms
        build = builder("ga", steps=n, stop_at=0.0)
        t = time.perf_counter()
        build()
        seconds[n] = time.perf_counter() - t
    best = max(rates.values())
    return {"flops_per_step": step, "matmul_gflops": rates, "floor_seconds": step / best / 1e9,
            "measured_seconds": (seconds[6] - seconds[2]) / 4}


STAGES = {"sae-align": sae_align_stage, "measure": measure_stage, "ga": ga_stage}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "flop_floor.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"threads": args.threads}
    for name in args.stages.split(","):
        r = report[name] = STAGES[name]()
        total = r.get("flops_per_target", r.get("flops", r.get("flops_per_step")))
        print(f"{name:10s} {total / 1e12:.2f} TFLOP  best matmul {max(r['matmul_gflops'].values()):.0f} GFLOP/s  "
              f"floor {r['floor_seconds']:.1f} s  measured {r['measured_seconds']:.1f} s", flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
