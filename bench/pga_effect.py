"""PGA family on SmolLM2-135M, all variants through the same verification (README + issue 6 note).

Conditions: unedited; closed-form PGA k=1 (hook; folded weight form); MD-PGA k=4 (hook);
adversarial PGA (hook); trained PGA (a rank-one delta per layer, weights). For each:
- ridge leave-one-key-out True accuracy and gap (True − Pure) at depths 13, 18, 24, 30 (8 contexts);
- the six probe variants and the re-fit attacker (fresh probe; original probe transferred) at depth 18;
- behaviour on the memorised texts: mean log-prob per token of M (and C) after the 4-token cue;
- capability: news perplexity (20 docs), capitals (20 known; blank + qa answer probability) and
  multiple choice accuracy over 40 capitals (chance 0.25).
Writes bench/pga_effect.json.
"""

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import repedit  # noqa: E402
from repedit.edits import EditStack  # noqa: E402
from repedit.edits.fold import fold_projection, untie_embeddings  # noqa: E402
from repedit.edits.pga import adversarial_pga, pga  # noqa: E402
from repedit.edits.pga_trained import TrainedPGAConfig, trained_pga  # noqa: E402
from repedit.fit.pool_features import CONTEXTS, pool_features  # noqa: E402
from repedit.fit.pool_screen import screen, screened  # noqa: E402
from repedit.forward.answer_scores import answer_logprobs  # noqa: E402
from repedit.suites import load_suite, load_text  # noqa: E402
from repedit.suites.pools import load_pool  # noqa: E402
from repedit.verify.perplexity import perplexity  # noqa: E402
from repedit.verify.probe_attacks import probe_variants_attack, refit_attack  # noqa: E402
from repedit.verify.recall import known_facts, recall  # noqa: E402
from repedit.verify.signature import depth_curve  # noqa: E402

DEPTHS, PEAK = (13, 18, 24, 30), 18
CTX = CONTEXTS[:8]


def measure(h, pool, original_feats, facts, mc_facts, news, writes=None):
    ctx = nullcontext()
    if writes:
        from repedit.backends.torch_hooks import installed
        ctx = installed(h, writes)
    t0 = time.perf_counter()
    feats = pool_features(h, pool, contexts=CTX, depths=DEPTHS, writes=writes, progress=False)
    curve, _ = depth_curve(feats)
    variants = probe_variants_attack(feats, depths=[PEAK])
    refit = refit_attack(feats, depths=[PEAK], original=original_feats) if original_feats is not None else None
    with ctx:
        rows = screen(h, pool).rows
        out = {
            "true_loo": dict(zip(DEPTHS, np.round(curve.true_loo, 3).tolist())),
            "gap": dict(zip(DEPTHS, np.round(curve.gap, 3).tolist())),
            "variants_at_18": dict(zip(variants.variants, [round(a[0], 3) for a in variants.accuracy])),
            "refit_at_18": None if refit is None else {"fresh": round(refit.accuracy[0][0], 3),
                                                       "transfer": round(refit.transfer[0], 3)},
            "memorised_logprob_M": round(float(np.mean([r.memorised for r in rows])), 3),
            "memorised_logprob_C": round(float(np.mean([r.paraphrase_c for r in rows])), 3),
            "perplexity": round(perplexity(h, news), 3),
            "capitals_probability": round(float(answer_logprobs(h, facts, ("blank", "qa")).exp().mean()), 4),
            "mc_accuracy": round(recall(h, mc_facts, ("mc",), progress=False).forms["mc"].accuracy, 3),
        }
    out["verify_seconds"] = round(time.perf_counter() - t0, 1)
    return out, feats


def main():
    t_all = time.perf_counter()
    h = repedit.load("smollm2-135m")
    pool, _ = screened(h, load_pool("natural"))
    facts = known_facts(h, load_suite("capitals"))[:20]
    mc_facts = load_suite("capitals")[:40]
    news = load_text("news", "heldout")[:20]
    res = {"keys": [k.key for k in pool.keys], "contexts": len(CTX)}
    res["none"], base = measure(h, pool, None, facts, mc_facts, news)
    print("none", res["none"], flush=True)
    t = time.perf_counter()
    proj = pga(base, depth=PEAK)
    res["pga_hook"], _ = measure(h, pool, base, facts, mc_facts, news, proj.writes())
    res["pga_hook"]["edit_seconds"] = round(time.perf_counter() - t, 1)
    md = pga(base, depth=PEAK, k=4, method="md")
    res["md4_hook"], _ = measure(h, pool, base, facts, mc_facts, news, md.writes())
    t = time.perf_counter()
    adv = adversarial_pga(h, pool, depth=PEAK, contexts=CTX)
    res["adversarial_hook"], _ = measure(h, pool, base, facts, mc_facts, news, adv.writes())
    res["adversarial_hook"] |= {"rounds": adv.history, "edit_seconds": round(time.perf_counter() - t, 1)}
    for name, r in res.items():
        if isinstance(r, dict) and "true_loo" in r:
            print(name, r, flush=True)
    t = time.perf_counter()
    edit = trained_pga(h, pool, TrainedPGAConfig(depth=PEAK), progress=False)
    stack = EditStack(h)
    stack.push(edit)
    res["trained_weights"], _ = measure(h, pool, base, facts, mc_facts, news)
    res["trained_weights"] |= {"edit_seconds": edit.stats["seconds"], "rank": edit.rank}
    stack.revert_all()
    print("trained", res["trained_weights"], flush=True)
    untie_embeddings(h)
    stack.push(fold_projection(h, proj))
    res["pga_folded"], _ = measure(h, pool, base, facts, mc_facts, news)
    stack.revert_all()
    print("folded", res["pga_folded"], flush=True)
    res["seconds_total"] = round(time.perf_counter() - t_all, 1)
    Path(__file__).with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
