"""Capture overhead against a bare HF forward on the same tokens (goal: ratio <= 1.10).

Compares, on the default model, 8 batches of 8 x 128 tokens of real news text:
  bare    the HF decoder body (`model.model`, no lm_head) — the same computation a capture of the
          last layer needs;
  capture repedit.forward.capture of resid_post at the last layer + mlp_hidden at the middle layer
          (torch backend);
and reports the early-stop speed-up for a middle-layer site. Prints ratios and tokens/s.
Run: ./dev bench   (or .venv/bin/python bench/capture_overhead.py)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import repedit  # noqa: E402
from repedit.forward.capture import capture  # noqa: E402
from repedit.suites import load_text  # noqa: E402


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    h = repedit.load("smollm2-135m")
    docs = [d for d in load_text("news", "train") if len(h.tokenizer.encode(d)) >= 128][:64]
    batches = [h.encode(docs[i: i + 8], max_length=128) for i in range(0, len(docs), 8)]
    texts_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    last, mid = h.n_layers - 1, h.n_layers // 2

    @torch.no_grad()
    def bare():
        for b in batches:
            h.model.model(**b)

    def cap(sites):
        return lambda: capture(h, docs, sites, batch_size=8, max_length=128, progress=False)

    bare()  # warm-up
    t_bare = best_of(bare)
    t_cap = best_of(cap([repedit.Site(last, "resid_post"), repedit.Site(mid, "mlp_hidden")]))
    t_mid = best_of(cap([repedit.Site(mid, "resid_post")]))
    print(f"tokens per pass: {texts_tokens}, threads: {torch.get_num_threads()}")
    print(f"bare HF body forward     : {t_bare:.2f}s  {texts_tokens / t_bare:,.0f} tok/s")
    print(f"capture (last+mid sites) : {t_cap:.2f}s  {texts_tokens / t_cap:,.0f} tok/s  "
          f"ratio {t_cap / t_bare:.3f} (goal <= 1.10)")
    print(f"capture mid layer {mid} (early stop): {t_mid:.2f}s  {texts_tokens / t_mid:,.0f} tok/s  "
          f"ratio {t_mid / t_bare:.3f}")


if __name__ == "__main__":
    main()
