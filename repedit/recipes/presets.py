"""Build a model's preset by running, on that model, the sweeps that chose SmolLM2-135M's defaults.

`build_preset(model_id)` (the API behind `repedit presets build <model>`):

(a) ROCR layer sweep (as `bench/rocr_layer_sweep.py`): for each window of 3 consecutive layers in
    the early-middle of the model, edit each of a few known capitals in turn (redirected to an
    invented country, reverted after) and measure the answer probability (mean over the qa, blank,
    paraphrase and adversarial forms) of the target and of other known capitals. Target retention =
    after / before for the target, neighbour retention = the mean of after / before over the
    neighbours; the window with the largest neighbour_retention − target_retention wins.
(b) the memorisation signature (`repedit.verify.signature`) on the screened "natural" pool: the
    depth with the largest True-LOO − Pure-LOO gap is the peak.

The other methods' layers follow from those two by rules (`RULES`; their offsets are fractions of
the depth, calibrated so that applied to SmolLM2-135M's sweep results they give its hand-chosen
defaults). Each value's rule and the sweep numbers are written into the preset's provenance.

This module sits in `models/` but runs edits and verification: it imports them inside functions.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from repedit.data import data_dirs, resolve_sae
from repedit.formats import stamped
from repedit.models.presets import COMMAND, file_name, presets_dir, source_root

FORMS = ("qa", "blank", "paraphrase", "adversarial")          # as bench/rocr_layer_sweep.py
WINDOW_STARTS = (0.10, 0.20, 0.33)                            # window starts, as fractions of n_layers
SIZES = {  # full: the size the Gemma 3 preset was built with; quick: a smoke test (seconds on SmolLM2)
    False: {"windows": 3, "targets": 6, "neighbours": 12, "stats_tokens": 6_000, "contexts": 8},
    True: {"windows": 2, "targets": 2, "neighbours": 3, "stats_tokens": 1_000, "contexts": 2},
}
RULES = {
    "rocr.layers": "the window of 3 consecutive layers with the largest neighbour_retention − target_retention "
                   "in the ROCR layer sweep (sweeps.rocr)",
    "pga.depth": "the memorisation signature's peak: the depth with the largest True-LOO − Pure-LOO gap "
                 "(sweeps.signature)",
    "pga-trained.depth": "= pga.depth (the signature's peak)",
    "mrp.layer": "last ROCR layer + round(4 · n_layers / 30) (SmolLM2-135M: 6 + 4 = 10)",
    "rmu.layer": "last ROCR layer + round(2 · n_layers / 30) (SmolLM2-135M: 6 + 2 = 8)",
    "leace.depth": "= rmu.layer as a depth (SmolLM2-135M: 8)",
    "knownness.layer": "n_layers // 2, the middle layer (the rule recipes used before presets)",
    "train-sae.layer": "n_layers // 2, the middle layer (where SmolLM2-135M's shipped SAE reads)",
    "sae": "an SAE under saes/ whose cfg.json metadata names this model and whose d_in is its d_model",
    "sae-align.layers": "{rmu.layer} ∪ {L−3, L−2, L−1}, L = the SAE's layer (SmolLM2-135M: 8, 12, 13, 14; "
                        "9–11 hold its attention sink)",
}


def windows_for(n_layers: int, count: int) -> list[tuple[int, int, int]]:
    """Windows of 3 consecutive layers starting at `WINDOW_STARTS` × n_layers (the first `count`)."""
    starts = sorted({min(max(1, round(f * n_layers)), n_layers - 3) for f in WINDOW_STARTS})
    return [(s, s + 1, s + 2) for s in starts[:count]]


def find_sae(model_id: str, d_model: int, root: Path | None = None) -> str | None:
    """The first SAE directory trained on `model_id` at width `d_model`, as `saes/<dir>`: under `root`/saes,
    or (root None) in the saes/ folders of `repedit.data.data_dirs` (checkout, or the wheel's copy)."""
    folders = [root / "saes"] if root is not None else [p for _, p in data_dirs("saes")]
    for folder in folders:
        for cfg in sorted(folder.glob("*/cfg.json")):
            try:
                d = json.loads(cfg.read_text())
            except ValueError:
                continue
            if d.get("metadata", {}).get("model_name") == model_id and int(d.get("d_in", -1)) == d_model:
                return f"saes/{cfg.parent.name}"
    return None


def sae_layer(sae: str, root: Path | None = None) -> int:
    from repedit.sites import Site

    d = json.loads(((root / sae) if root is not None else resolve_sae(sae)).joinpath("cfg.json").read_text())
    return Site.parse(d["metadata"]["hook_name"]).layer


def derive(n_layers: int, rocr_layers: Sequence[int], peak_depth: int | None, sae: str | None,
           sae_at: int | None) -> dict:
    """Every section's defaults from the two sweep results, by `RULES`."""
    last = rocr_layers[-1]
    clamp = lambda x: min(max(int(x), 0), n_layers - 1)       # noqa: E731
    rmu = clamp(last + round(2 * n_layers / 30))
    align = None
    if sae is not None and sae_at is not None:
        align = sorted({l for l in (rmu, sae_at - 3, sae_at - 2, sae_at - 1) if 0 <= l <= sae_at})
    return {"rocr": {"layers": list(rocr_layers)},
            "sae-align": {"layers": align},
            "mrp": {"layer": clamp(last + round(4 * n_layers / 30))},
            "pga": {"depth": peak_depth}, "pga-trained": {"depth": peak_depth},
            "rmu": {"layer": rmu}, "leace": {"depth": max(1, rmu)},
            "knownness": {"layer": n_layers // 2}, "train-sae": {"layer": n_layers // 2}}


def choose_window(rows: Sequence[dict]) -> dict:
    """The sweep row with the largest neighbour_retention − target_retention."""
    return max(rows, key=lambda r: r["neighbour_retention"] - r["target_retention"])


def preset_dict(model_id: str, arch: dict, rocr_rows: Sequence[dict], signature: dict | None, *,
                sae: str | None, provenance: dict) -> dict:
    """The preset file's content from the sweep results (rules applied, numbers kept)."""
    rows = [dict(r, score=round(r["neighbour_retention"] - r["target_retention"], 4)) for r in rocr_rows]
    best = choose_window(rows)
    peak = signature["peak_depth"] if signature else None
    sae_at = sae_layer(sae) if sae else None
    defaults = derive(arch["n_layers"], best["layers"], peak, sae, sae_at)
    rules = dict(RULES)
    if sae is None:
        rules["sae-align.layers"] = (f"none: no SAE is trained on {model_id}; train one with `repedit train-sae "
                                     f"--model {model_id} --layer {defaults['train-sae']['layer']} --out saes/"
                                     f"{model_id}-L{defaults['train-sae']['layer']}-topk`, then rebuild the preset "
                                     f"(`{COMMAND.format(model=model_id)}`)")
        rules["sae"] = "none: " + RULES["sae"] + " exists"
    warnings = []
    if best["neighbour_retention"] < 0.5:
        warnings.append(
            f"ROCR does not work on {model_id} as implemented: in every window the edit also destroys the neighbours "
            f"(best window {best['layers']} keeps {best['neighbour_retention']:.3f} of their answer probability). "
            "rocr.layers is still the best-scoring window, and the layers derived from it follow the rules, but they "
            "rest on a failed sweep" + (" (the edit moves the residual away from its target: residual_after_over_"
                                        "before > 1, e.g. an MLP output that passes through a norm before the add)"
                                        if best.get("residual_after_over_before", 0) > 1 else ""))
    if peak is None:
        rules["pga.depth"] = rules["pga-trained.depth"] = "none: the signature could not be measured (see sweeps)"
    provenance = dict(provenance)
    settings = provenance.pop("rocr_settings", {})
    prov = {**provenance, **({"warnings": warnings} if warnings else {}), "rules": rules,
            "sweeps": {"rocr": {**settings, "rows": rows, "chosen": best["layers"]}, "signature": signature}}
    return stamped("preset", {"model": model_id, "architecture": arch, "defaults": defaults, "sae": sae,
                              "provenance": prov})


def _dumps(content: dict) -> str:
    """Indented JSON with lists of scalars on one line (checked to parse back to the same value)."""
    text = json.dumps(content, indent=1, ensure_ascii=False)
    flat = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    return flat if json.loads(flat) == content else text


def write(content: dict, out: Path) -> Path:
    """Write a preset atomically (validated by reading it back)."""
    from repedit.models.presets import Preset

    Preset.from_dict(json.loads(json.dumps(content)))          # refuse to write what cannot be read
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(_dumps(content) + "\n")
    tmp.replace(out)
    return out


def _known_capitals(handle, n: int, minimum: int, progress: bool) -> list:
    """The first `n` capitals (suite order) the model answers (greedy, blank form); at least `minimum`."""
    from repedit.suites import load_suite
    from repedit.verify.recall import known_facts

    facts, known = load_suite("capitals"), []
    for i in range(0, len(facts), 16):
        known += known_facts(handle, facts[i: i + 16])
        if progress:
            print(f"[preset] known capitals: {len(known)} of the first {min(i + 16, len(facts))}", flush=True)
        if len(known) >= n:
            return known[:n]
    if len(known) < minimum:
        from repedit.errors import InputError

        raise InputError(f"{handle.id} answers only {len(known)} capitals; the ROCR sweep needs {minimum}")
    return known


def rocr_sweep(handle, windows: Sequence[Sequence[int]], targets: Sequence, neighbours: Sequence, *,
               stats_tokens: int, progress: bool = True) -> list[dict]:
    """The ROCR layer sweep of the module docstring: one row per window."""
    from repedit.edits import EditStack
    from repedit.edits.rocr import ROCR, ROCRConfig
    from repedit.forward.answer_scores import answer_logprobs
    from repedit.suites import load_suite

    invented = [f.subject for f in load_suite("unknown-entities")]
    facts = list(targets) + list(neighbours)
    base = answer_logprobs(handle, facts, FORMS).exp()
    others = list(range(len(targets), len(facts)))
    rows = []
    for layers in windows:
        t0 = time.perf_counter()
        rocr = ROCR(handle, ROCRConfig(layers=tuple(layers), stats_tokens=stats_tokens))
        keep_t, keep_n, secs, reach = [], [], [], []
        for i, f in enumerate(targets):
            e = rocr.edit(f.subject, invented[i], remember=False)
            secs.append(e.stats["seconds"])
            reach.append(e.stats["residual_norm_after"] / max(e.stats["residual_norm_before"], 1e-9))
            stack = EditStack(handle)
            stack.push(e)
            try:
                after = answer_logprobs(handle, facts, FORMS).exp()
            finally:
                stack.pop()
            keep_t.append(float(after[i] / base[i]))
            keep_n.append(float((after[others] / base[others]).mean()))
        row = {"layers": list(layers), "target_retention": round(sum(keep_t) / len(keep_t), 4),
               "neighbour_retention": round(sum(keep_n) / len(keep_n), 4),
               "residual_after_over_before": round(sum(reach) / len(reach), 4),    # < 1: the edit reached toward z*
               "seconds_per_edit": round(sum(secs) / len(secs), 3), "stats_seconds": round(rocr.stats_seconds, 2),
               "wall": round(time.perf_counter() - t0, 2)}
        rows.append(row)
        if progress:
            print(f"[preset] rocr layers {list(layers)}: target keeps {row['target_retention']:.3f}, neighbours "
                  f"keep {row['neighbour_retention']:.3f} ({row['wall']:.0f}s)", flush=True)
    return rows


def signature_peak(handle, pool_name: str = "natural", *, contexts: int, progress: bool = True) -> dict:
    """The signature over every depth (1 shuffle seed, no random-init twin): curve and peak."""
    from repedit.fit.pool_features import CONTEXTS
    from repedit.fit.pool_screen import screened
    from repedit.suites.pools import load_pool
    from repedit.verify.signature import signature

    pool, _report = screened(handle, load_pool(pool_name))
    res = signature(handle, pool, contexts=CONTEXTS[:contexts], shuffle_seeds=(0,), random_init=False,
                    progress=progress)
    r3 = lambda xs: [round(float(x), 4) for x in xs]           # noqa: E731
    out = {"pool": pool_name, "keys": len(res.keys), "contexts": res.n_views, "alpha": res.alpha,
           "depths": list(res.depths), "true_loo": r3(res.curve.true_loo), "pure_loo": r3(res.curve.pure_loo),
           "gap": r3(res.curve.gap), "peak_depth": res.peak_depth, "peak_gap": round(res.peak_gap, 4),
           "gap_ci_at_peak": r3(res.curve.gap_ci[res.peak_index]), "seconds": res.seconds}
    if progress:
        print(f"[preset] signature peak: depth {res.peak_depth}, gap {res.peak_gap:+.3f}", flush=True)
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source_root(), capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment() -> dict:
    import torch

    from repedit.version import __version__

    return {"repedit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "git": _git_commit()}


def build_preset(model_id: str, *, quick: bool = False, progress: bool = True, out: str | Path | None = None,
                 handle=None, windows: Sequence[Sequence[int]] | None = None, n_targets: int | None = None,
                 n_neighbours: int | None = None, stats_tokens: int | None = None, contexts: int | None = None,
                 pool: str = "natural", sae: str | None = None) -> Path:
    """Run the sweeps on `model_id`, derive every method's defaults and write the preset JSON.

    Full sizes: 3 windows (Gemma 3: layers 2–4, 4–6, 6–8), 6 targets, up to 12 neighbours, 6k statistics
    tokens, 8 pool contexts. quick: 2 windows, 2 targets, 3 neighbours, 1k tokens, 2 contexts, a
    smoke test, not a preset to ship. out: the file (default: this package's `<id>.json`, which the
    loader reads). handle: an already loaded model (default: `repedit.load(model_id)`). The other
    keywords override the sizes (`SIZES`); sae: the SAE directory to record (default: `find_sae`).
    Returns the written path.
    """
    from repedit.models.loader import load

    t0 = time.perf_counter()
    size = dict(SIZES[bool(quick)])
    for key, value in (("targets", n_targets), ("neighbours", n_neighbours), ("stats_tokens", stats_tokens),
                       ("contexts", contexts)):
        if value is not None:
            size[key] = int(value)
    h = handle if handle is not None else load(model_id)
    if h.id != model_id:
        from repedit.errors import ConfigError

        raise ConfigError(f"the handle is {h.id!r}, not {model_id!r}")
    wins = [tuple(w) for w in windows] if windows else windows_for(h.n_layers, size["windows"])
    # neighbours: up to the size asked, at least 2 (a weak model may know few capitals)
    known = _known_capitals(h, size["targets"] + size["neighbours"], size["targets"] + 2, progress)
    targets, neighbours = known[: size["targets"]], known[size["targets"]:]
    t1 = time.perf_counter()
    rows = rocr_sweep(h, wins, targets, neighbours, stats_tokens=size["stats_tokens"], progress=progress)
    t2 = time.perf_counter()
    sig = signature_peak(h, pool, contexts=size["contexts"], progress=progress)
    t3 = time.perf_counter()
    sae = sae if sae is not None else find_sae(model_id, h.d_model)
    flags = " --quick" if quick else ""
    provenance = {
        "command": COMMAND.format(model=model_id) + flags,
        "api": f"repedit.recipes.presets.build_preset({model_id!r}, quick={bool(quick)}, windows={wins}, "
               f"n_targets={size['targets']}, n_neighbours={size['neighbours']}, "
               f"stats_tokens={size['stats_tokens']}, contexts={size['contexts']}, pool={pool!r})",
        "date": datetime.date.today().isoformat(), "quick": bool(quick),
        "wall_seconds": {"known_facts": round(t1 - t0, 1), "rocr_sweep": round(t2 - t1, 1),
                         "signature": round(t3 - t2, 1), "total": round(time.perf_counter() - t0, 1)},
        "environment": _environment(),
        "rocr_settings": {"forms": list(FORMS), "stats_tokens": size["stats_tokens"],
                          "targets": [f.subject for f in targets], "neighbours": [f.subject for f in neighbours],
                          "redirect_to": "invented countries (probes/facts/unknown-entities.jsonl), one per target"},
    }
    arch = {"n_layers": h.n_layers, "d_model": h.d_model, "d_mlp": h.d_mlp}
    content = preset_dict(model_id, arch, rows, sig, sae=sae, provenance=provenance)
    path = write(content, Path(out) if out is not None else presets_dir() / file_name(model_id))
    if progress:
        d = content["defaults"]
        print(f"[preset] wrote {path} in {time.perf_counter() - t0:.0f}s: rocr {d['rocr']['layers']}, "
              f"pga depth {d['pga']['depth']}, mrp {d['mrp']['layer']}, rmu {d['rmu']['layer']}, sae {sae}", flush=True)
    return path


def preset_from_results(model_id: str, arch: dict, sweep_json: str | Path, signature_json: str | Path, *,
                        out: str | Path | None = None, sae: str | None = None, command: str = "",
                        sources: dict | None = None) -> Path:
    """Write a preset from committed sweep results (`bench/rocr_layer_sweep.py`'s JSON and a
    `repedit signature` JSON) instead of running the sweeps: how SmolLM2-135M's preset was made."""
    sweep = json.loads(Path(sweep_json).read_text())
    s = json.loads(Path(signature_json).read_text())
    gap = s["curve"]["gap"]
    peak = max(range(len(gap)), key=gap.__getitem__)
    r3 = lambda xs: [round(float(x), 4) for x in xs]           # noqa: E731
    sig = {"pool": s["pool"], "keys": len(s["keys"]), "contexts": s["n_views"], "alpha": s["alpha"],
           "depths": s["depths"], "true_loo": r3(s["curve"]["true_loo"]), "pure_loo": r3(s["curve"]["pure_loo"]),
           "gap": r3(gap), "peak_depth": s["depths"][peak], "peak_gap": round(gap[peak], 4),
           "gap_ci_at_peak": r3(s["curve"]["gap_ci"][peak]), "seconds": s.get("seconds"),
           "source": str(signature_json)}
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in sweep["rows"]]
    provenance = {"command": command, "date": datetime.date.today().isoformat(), "quick": False,
                  "environment": _environment(), "sources": sources or {},
                  "rocr_settings": {"forms": list(FORMS), "stats_tokens": 40_000, "targets": sweep["targets"],
                                    "neighbours": sweep["neighbours"], "source": str(sweep_json)}}
    sae = sae if sae is not None else find_sae(model_id, arch["d_model"])
    content = preset_dict(model_id, arch, rows, sig, sae=sae, provenance=provenance)
    return write(content, Path(out) if out is not None else presets_dir() / file_name(model_id))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m repedit.recipes.presets MODEL [--quick] [--out FILE]`, or from committed results:
    `... MODEL --from-sweep SWEEP.json --from-signature SIGNATURE.json`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m repedit.recipes.presets", description=main.__doc__)
    ap.add_argument("model")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--from-sweep")
    ap.add_argument("--from-signature")
    a = ap.parse_args(argv)
    if a.from_sweep or a.from_signature:
        if not (a.from_sweep and a.from_signature):
            ap.error("--from-sweep and --from-signature go together")
        from repedit.models.loader import load

        h = load(a.model)
        cmd = (f"python -m repedit.recipes.presets {a.model} --from-sweep {a.from_sweep} "
               f"--from-signature {a.from_signature}")
        path = preset_from_results(a.model, {"n_layers": h.n_layers, "d_model": h.d_model, "d_mlp": h.d_mlp},
                                   a.from_sweep, a.from_signature, out=a.out, command=cmd)
    else:
        path = build_preset(a.model, quick=a.quick, out=a.out)
    print(path)


if __name__ == "__main__":
    main()
