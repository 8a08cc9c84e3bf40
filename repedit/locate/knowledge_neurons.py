"""Knowledge neurons (Dai et al. 2022): integrated gradients over the MLP hidden activation.

For a prompt and the answer's first token y*, at the last prompt position and layer l:
    Attr(i) = ā_i · (1/m) Σ_{s=1..m} ∂P(y* | α_s ā)/∂a_i,   α_s = s/m, baseline 0, m = 20.
Only the last position is rewritten, so on Hugging Face models the prompt runs once into a KV cache
and the m scaled copies of several layers (about `ROWS` rows) run together as that one token, blocks
below a group's first layer skipped (`integrated_gradients`); other models run m full prompts per layer.
Neurons with Attr ≥ 0.2 · max (over all layers, per prompt) are kept; refinement across ≥ 3 prompts
of the same fact keeps neurons shared by ≥ p of them, starting at p = 0.7 and moving by 0.05 until 2–5
neurons remain (or p leaves [0.05, 1]).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from repedit.backends.base import get_backend
from repedit.errors import InputError
from repedit.forward.text import answer_ids, prompt_ids
from repedit.sites import Point
from repedit.suites import Fact

ROWS = 120      #: rows per batched forward of integrated gradients (m copies × layers)


@dataclass(frozen=True)
class KnowledgeNeurons:
    fact_id: str
    answer: str
    neurons: tuple[tuple[int, int], ...]         # (layer, hidden unit)
    threshold_share: float                       # the p that left 2–5 neurons
    layer_max_attr: tuple[float, ...] = field(repr=False)   # max attribution per layer, mean over prompts
    per_prompt: tuple[tuple[tuple[int, int], ...], ...] = field(repr=False, default=())
    seconds: float = 0.0

    def by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, unit in self.neurons:
            out.setdefault(layer, []).append(unit)
        return out

    def to_dict(self) -> dict:
        return {"fact_id": self.fact_id, "answer": self.answer, "neurons": [list(n) for n in self.neurons],
                "threshold_share": self.threshold_share, "layer_max_attr": list(self.layer_max_attr),
                "seconds": self.seconds}


def integrated_gradients(handle, prompt_ids: list[int], target_id: int, layers: Sequence[int], steps: int = 20
                         ) -> torch.Tensor:
    """IG attribution of P(target) to every hidden unit of each layer at the last position: [len(layers), d_mlp].

    Only the last position is rewritten, so (causal attention) every earlier position is the same in all m
    scaled copies and for every layer: on Hugging Face models the prompt minus its last token runs once into
    a KV cache and each layer's m copies run just the last token against it (`_ig_last_token`); other
    models run the m full prompts per layer (`_ig_full`). Both compute the same values up to float rounding."""
    if steps < 1:
        raise InputError("steps must be >= 1")
    from repedit.forward.generation import keeps_tail_logits

    be = get_backend(handle, "torch")
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=handle.input_device)
    fast = keeps_tail_logits(handle) and len(prompt_ids) > 1
    reads = [(layer, Point.MLP_HIDDEN) for layer in layers] + [(layer, Point.RESID_PRE) for layer in layers if fast]
    with torch.no_grad():
        base = be.run(ids, None, reads=reads, stop_early=True).acts
    alphas = torch.arange(1, steps + 1, dtype=torch.float32, device=ids.device) / steps
    a_bars = [base[(layer, Point.MLP_HIDDEN)][0, -1].float() for layer in layers]     # [d_mlp] each, on its device
    if fast:
        entering = {layer: base[(layer, Point.RESID_PRE)][:, -1:] for layer in layers}  # [1, 1, d_model]
        grads = _ig_last_token(handle, ids, target_id, layers, alphas, a_bars, entering)
    else:
        grads = _ig_full(handle, ids, target_id, layers, alphas, a_bars)
    return torch.stack([(a_bar * g.float().mean(0)).cpu() for a_bar, g in zip(a_bars, grads)])  # float32, CPU


def _scaled(alphas: torch.Tensor, a_bar: torch.Tensor) -> torch.Tensor:
    return (alphas.to(a_bar.device)[:, None] * a_bar[None, :]).requires_grad_(True)       # [m, d_mlp]


def _write_last(scaled: torch.Tensor):
    def write(x):
        x = x.clone()
        x[:, -1, :] = scaled
        return x
    return write


def _ig_full(handle, ids, target_id, layers, alphas, a_bars) -> list[torch.Tensor]:
    """∂P(target)/∂(scaled hidden) [m, d_mlp] per layer: one forward + backward of the m full prompts per layer."""
    be = get_backend(handle, "torch")
    batch = ids.expand(len(alphas), -1)
    out = []
    for layer, a_bar in zip(layers, a_bars):
        scaled = _scaled(alphas, a_bar)
        with torch.enable_grad():
            logits = be.run(batch, None, writes={(layer, Point.MLP_HIDDEN): _write_last(scaled)}).logits
            prob = torch.softmax(logits[:, -1].float(), -1)[:, target_id].sum()
            (grad,) = torch.autograd.grad(prob, scaled)
        out.append(grad)
    return out


def _ig_last_token(handle, ids, target_id, layers, alphas, a_bars, entering) -> list[torch.Tensor]:
    """The same gradients with the prompt's first n−1 tokens run once (no gradient) into a KV cache; the m
    copies of several layers (about `ROWS` rows) then run together, only the last token against copies of
    that cache, each layer's hook rewriting its own m rows (rows never mix: the gradient of the summed
    probability with respect to one layer's copies is that layer's gradient). Blocks below a group's first
    layer are the same in every copy: they are skipped, the first block reading the last token's residual
    from the plain forward (`entering[layer]` [1, 1, d_model], `forward.passes.start_at`)."""
    import copy

    from transformers import DynamicCache

    from repedit.backends.torch_hooks import installed
    from repedit.forward.passes import start_at

    model, m = handle.model, len(alphas)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
    per = max(1, ROWS // m) if len(set(layers)) == len(layers) else 1                 # layers per forward
    out = []
    for c in range(0, len(layers), per):
        chunk, bars = layers[c: c + per], a_bars[c: c + per]
        n = m * len(chunk)
        scaled = [_scaled(alphas, a_bar) for a_bar in bars]
        writes = {(layer, Point.MLP_HIDDEN): _write_rows(s, slice(i * m, (i + 1) * m))
                  for i, (layer, s) in enumerate(zip(chunk, scaled))}
        past = copy.deepcopy(cache)                                                   # the forward appends to it
        past.batch_repeat_interleave(n)
        pos = torch.full((n, 1), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        first = min(chunk)
        with torch.enable_grad(), installed(handle, writes), start_at(handle, first, entering[first].expand(n, 1, -1)):
            logits = model(input_ids=ids[:, -1:].expand(n, -1), position_ids=pos, past_key_values=past,
                           use_cache=True, logits_to_keep=1).logits                   # [n, 1, vocab]
            prob = torch.softmax(logits[:, -1].float(), -1)[:, target_id].sum()
            out += torch.autograd.grad(prob, scaled)
    return out


def _write_rows(scaled: torch.Tensor, rows: slice):
    def write(x):
        x = x.clone()
        x[rows, -1, :] = scaled.to(x.device, x.dtype)
        return x
    return write


def _refine(sets: list[set[tuple[int, int]]], start: float = 0.7, lo: int = 2, hi: int = 5) -> tuple[list, float]:
    counts = Counter(n for s in sets for n in s)
    p, tried = start, set()
    while True:
        kept = sorted(n for n, c in counts.items() if c >= p * len(sets) - 1e-9)
        tried.add(round(p, 2))
        if lo <= len(kept) <= hi:
            return kept, p
        nxt = p + 0.05 if len(kept) > hi else p - 0.05
        if nxt > 1.0 + 1e-9 or nxt < 0.05 - 1e-9 or round(nxt, 2) in tried:
            return kept, p
        p = nxt


def knowledge_neurons(handle, fact: Fact, *, forms: Sequence[str] = ("blank", "paraphrase", "qa"),
                      layers: Sequence[int] | None = None, steps: int = 20, rel_threshold: float = 0.2,
                      contrast: Sequence[Fact] = (), progress: bool = True) -> KnowledgeNeurons:
    """Locate the knowledge neurons of one fact from its prompts in `forms` (at least 3).

    `contrast`: related facts (e.g. other capitals). Their mean attribution (blank form) is
    subtracted before thresholding, as KLUE's "superficial knowledge" regulariser does, so
    neurons of the relation ("capital of") give way to neurons of this fact.
    """
    if len(forms) < 3:
        raise InputError("refinement needs at least 3 prompts of the fact: pass >= 3 forms")
    if "mc" in forms:
        raise InputError("knowledge neurons are attributed on free-text forms; leave out 'mc'")
    layers = list(range(handle.n_layers)) if layers is None else list(layers)
    for layer in layers:
        handle.check_layer(layer)
    t0 = time.perf_counter()
    sets, layer_max = [], torch.zeros(len(layers), device="cpu")         # attributions live on the CPU
    shared = torch.zeros(len(layers), handle.d_mlp, device="cpu")
    for other in contrast:
        spec = other.forms["blank"]
        shared += integrated_gradients(handle, prompt_ids(handle, spec["prompt"], spec["chat"]),
                                       answer_ids(handle, other.answer, spec["chat"])[0], layers, steps) / len(contrast)
    for form in tqdm(forms, disable=not progress, desc=f"knowledge neurons: {fact.id}"):
        spec = fact.forms[form]
        prompt = prompt_ids(handle, spec["prompt"], spec["chat"])
        target = answer_ids(handle, fact.answer, spec["chat"])[0]
        attr = integrated_gradients(handle, prompt, target, layers, steps) - shared   # [L, d_mlp]
        layer_max += attr.max(dim=1).values / len(forms)
        keep = torch.nonzero(attr >= rel_threshold * attr.max())
        sets.append({(layers[int(i)], int(j)) for i, j in keep})
    kept, p = _refine(sets)
    return KnowledgeNeurons(fact_id=fact.id, answer=fact.answer, neurons=tuple(kept), threshold_share=p,
                            layer_max_attr=tuple(layer_max.tolist()), per_prompt=tuple(tuple(sorted(s)) for s in sets),
                            seconds=time.perf_counter() - t0)
