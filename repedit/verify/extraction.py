"""White-box extraction: read an edited fact back out of the residual stream at every layer.

After ROME-style deletion 38 % of facts were still recoverable from intermediate states (Patil et
al. 2024, "Can Sensitive Information Be Deleted From LLMs?"). Two read-outs of the residual after
each block at the prompt's last position:
- logit lens: the model's own final norm and unembedding (`repedit.locate.concept_vectors.project_to_vocab`);
- tuned read-out: per layer an affine map A_l h + b_l ≈ h_final (the last block's output, before the
  final norm), fitted on clean text by closed-form ridge least squares in float64 — a least-squares
  version of Belrose et al.'s tuned lens (2023), which trains its translators by KL instead.
The last layer is the model's own output for both (its translator is the identity).
`extraction_attack` summarises per layer (mean answer probability, median rank, top-k fraction) and the
headline: the fraction of facts whose answer is in the top-k at any intermediate layer;
`compare_extraction` counts facts erased at the output that an intermediate layer still gives away.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from repedit.backends.base import get_backend
from repedit.errors import ConfigError, InputError
from repedit.forward.text import answer_ids, prompt_ids
from repedit.locate.concept_vectors import project_to_vocab
from repedit.models.handle import pad_rows
from repedit.sites import Point
from repedit.suites import Fact

LENSES = ("logit", "tuned")
FIT_CORPUS = (("wiki", "train"), ("news", "train"))
EVAL_CORPUS = (("wiki", "heldout"), ("news", "heldout"))
ROWS = 256                                   # rows per vocabulary projection (bounds [rows, vocab] memory)


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Per-layer affine translators h ↦ A_l h + b_l into the last layer's residual (float32, CPU).

    weight [n_layers, d_out, d_in], bias [n_layers, d]; the last layer's is the identity. Moved to the
    hidden state's device at the point of use; the maths runs in float32, cast back at the boundary."""

    model: str
    weight: torch.Tensor                    #: [n_layers, d_out, d_in]
    bias: torch.Tensor                      #: [n_layers, d]
    n_tokens: int = 0                       #: clean-text tokens the maps were fitted on
    ridge: float = 0.0                      #: ridge λ, relative to the mean eigenvalue of the covariance

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if w.ndim != 3 or w.shape[1] != w.shape[2] or b.shape != w.shape[:2]:
            raise InputError(f"TunedLens needs weight [layers, d, d] and bias [layers, d]; got "
                             f"{tuple(w.shape)} and {tuple(b.shape)}")

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, h: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Translate residuals of `layers` (default all) into final-layer space: [..., n, d] -> same."""
        idx = list(range(self.n_layers)) if layers is None else [int(x) for x in layers]
        if h.shape[-2:] != (len(idx), self.bias.shape[1]) or not all(0 <= i < self.n_layers for i in idx):
            raise InputError(f"TunedLens({self.model}) reads [..., {len(idx)}, {self.bias.shape[1]}] at layers "
                             f"0..{self.n_layers - 1}; got {tuple(h.shape)} at {idx}")
        w, b = self.weight[idx].to(h.device, torch.float32), self.bias[idx].to(h.device, torch.float32)
        return (torch.einsum("...li,loi->...lo", h.float(), w) + b).to(h.dtype)

    def save(self, path: str | Path) -> None:
        """Write as safetensors (weights plus model id, tokens and ridge in the metadata)."""
        from safetensors.torch import save_file

        meta = {"kind": "repedit.TunedLens", "model": self.model, "n_tokens": str(self.n_tokens),
                "ridge": repr(self.ridge)}
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> TunedLens:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != "repedit.TunedLens":
                raise InputError(f"{path} is not a saved TunedLens (metadata kind {meta.get('kind')!r})")
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
        return cls(meta["model"], weight, bias, int(meta["n_tokens"]), float(meta["ridge"]))


# ----- residuals ------------------------------------------------------------------------------
def _texts(corpus) -> list[str]:
    from repedit.suites import load_text

    return [t for name, split in corpus for t in load_text(name, split)]


@torch.no_grad()
def residuals(handle, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, logits: bool = True):
    """Residual after every block, [batch, seq, n_layers, d] (the last one before the final norm,
    i.e. HF's hidden_states[1..n] with the final norm undone), and the model's logits [batch, seq, vocab]
    (None with `logits=False`, which skips the unembedding)."""
    reads = [(layer, Point.RESID_POST) for layer in range(handle.n_layers)]
    res = get_backend(handle, "torch").run(input_ids, attention_mask, reads=reads, stop_early=not logits)
    dev = res.acts[reads[-1]].device
    return torch.stack([res.acts[k].to(dev) for k in reads], dim=2), res.logits


def _corpus_rows(handle, texts: Sequence[str], n_tokens: int, context: int, outlier: float):
    """Yield residual rows [n, n_layers, d] of clean text: position 0, padding and tokens whose norm
    exceeds `outlier` × the batch median at any layer (massive activations) are left out."""
    seen = 0
    for i in range(0, len(texts), 8):
        batch = handle.encode(list(texts[i: i + 8]), max_length=context)
        h, _ = residuals(handle, batch["input_ids"], batch["attention_mask"], logits=False)
        mask = batch["attention_mask"].to(h.device).bool()
        mask[:, 0] = False                                         # massive activations at position 0
        rows = h[mask].float()                                     # [n, layers, d]
        norms = rows.norm(dim=-1)                                  # [n, layers]
        rows = rows[(norms <= outlier * norms.median(0).values).all(-1)]
        rows = rows[: n_tokens - seen]
        seen += len(rows)
        yield rows
        if seen >= n_tokens:
            return
    if seen == 0:
        raise InputError("no usable tokens in the texts (each needs more than one token)")


# ----- fitting ---------------------------------------------------------------------------------
@torch.no_grad()
def fit_tuned_lens(handle, texts: Sequence[str] | None = None, *, n_tokens: int = 8_000, ridge: float = 1e-2,
                   context: int = 128, outlier: float = 8.0, cache: bool = True) -> TunedLens:
    """Fit A_l, b_l minimising ‖A_l h_l + b_l − h_final‖² + ridge-penalty on ~n_tokens of clean text
    (default: the wiki + news training corpora; cached on disk by model weights when default)."""
    if n_tokens < handle.d_model or ridge < 0 or outlier <= 1:
        raise ConfigError(f"fit_tuned_lens needs n_tokens ≥ d_model ({handle.d_model}), ridge ≥ 0, outlier > 1 "
                          f"(got {n_tokens}, {ridge}, {outlier})")
    path = _cache_path(handle, n_tokens, ridge, context, outlier) if cache and texts is None else None
    if path is not None and path.exists():
        return TunedLens.load(path)
    L, d = handle.n_layers, handle.d_model
    sx = sxx = sxy = sy = None
    n = 0
    for rows in _corpus_rows(handle, texts if texts is not None else _texts(FIT_CORPUS), n_tokens, context, outlier):
        x = rows[:, :-1].double().transpose(0, 1)                  # [L-1, n, d]
        y = rows[:, -1].double()                                   # [n, d]
        if sx is None:
            sx, sy = x.new_zeros(L - 1, d), y.new_zeros(d)
            sxx, sxy = x.new_zeros(L - 1, d, d), x.new_zeros(L - 1, d, d)
        sx += x.sum(1)
        sy += y.sum(0)
        sxx += x.transpose(1, 2) @ x
        sxy += x.transpose(1, 2) @ y
        n += len(y)
    mx, my = sx / n, sy / n
    cxx = sxx / n - mx[:, :, None] * mx[:, None, :]                # [L-1, d, d]
    cxy = sxy / n - mx[:, :, None] * my[None, None, :]             # [L-1, d_in, d_out]
    scale = cxx.diagonal(dim1=1, dim2=2).mean(-1)                  # mean eigenvalue per layer
    eye = torch.eye(d, dtype=cxx.dtype, device=cxx.device)
    chol, info = torch.linalg.cholesky_ex(cxx + ridge * scale[:, None, None] * eye)   # batched LU is unreliable
    if bool((info != 0).any()):
        raise ConfigError(f"fit_tuned_lens: the covariance is singular at layers {info.nonzero()[:, 0].tolist()}; "
                          "raise ridge or n_tokens")
    a = torch.cholesky_solve(cxy, chol).transpose(1, 2)          # [L-1, out, in]
    b = my - torch.einsum("loi,li->lo", a, mx)
    weight = torch.cat([a, eye[None]]).float().cpu()
    bias = torch.cat([b, b.new_zeros(1, d)]).float().cpu()
    lens = TunedLens(handle.id, weight, bias, n, ridge)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        lens.save(tmp)
        tmp.replace(path)
    return lens


def _cache_path(handle, n_tokens: int, ridge: float, context: int, outlier: float) -> Path:
    from repedit.forward.weights import weights_fingerprint
    from repedit.models.cache import cache_root

    safe = re.sub(r"[^\w.-]", "_", handle.id)
    dtype = str(handle.dtype).replace("torch.", "")
    name = f"tuned-lens.{dtype}.wiki+news.train-c{context}-n{n_tokens}-r{ridge:g}-o{outlier:g}.safetensors"
    return cache_root() / "lenses" / safe / weights_fingerprint(handle, handle.n_layers - 1) / name


# ----- read-outs -------------------------------------------------------------------------------
def _vocab_logits(handle, h: torch.Tensor) -> torch.Tensor:
    """Logit-lens logits [n, vocab] of residuals [n, d] (final norm + unembedding) in float32, `ROWS` rows at a time."""
    dev = handle.matrix("unembed").param.device
    return torch.cat([project_to_vocab(handle, h[i: i + ROWS].to(dev)).float() for i in range(0, len(h), ROWS)])


def _lens_views(handle, h: torch.Tensor, lens: TunedLens | None,
                layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """{lens name: residuals [..., n, d] of `layers` (default all) as that lens feeds them to the unembedding}."""
    views = {"logit": h}
    if lens is not None:
        if lens.n_layers != handle.n_layers or lens.bias.shape[1] != handle.d_model:
            raise InputError(f"TunedLens({lens.model}) has {lens.n_layers} layers × {lens.bias.shape[1]}; "
                             f"{handle.id} has {handle.n_layers} × {handle.d_model}")
        views["tuned"] = lens(h, layers)
    return views


@torch.no_grad()
def lens_kl(handle, lens: TunedLens | None, texts: Sequence[str] | None = None, *, n_tokens: int = 512,
            layers: Sequence[int] | None = None, context: int = 128) -> dict:
    """Mean KL(model's final distribution ‖ lens distribution) in nats per layer on held-out clean text
    (default: wiki + news held-out), position 0 excluded: {"layers", "n_tokens", "logit", "tuned"}."""
    layers = list(range(handle.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        handle.check_layer(layer)
    sums = {name: [0.0] * len(layers) for name in (LENSES if lens is not None else LENSES[:1])}
    n = 0
    for rows in _corpus_rows(handle, texts if texts is not None else _texts(EVAL_CORPUS), n_tokens, context,
                             outlier=float("inf")):
        for c in rows.to(handle.dtype).split(ROWS):
            final = torch.log_softmax(_vocab_logits(handle, c[:, -1]), -1)     # [rows, vocab]
            for name, view in _lens_views(handle, c[:, layers], lens, layers).items():
                for j in range(len(layers)):
                    logq = torch.log_softmax(_vocab_logits(handle, view[:, j]), -1)
                    sums[name][j] += float((final.exp() * (final - logq)).sum())
        n += len(rows)
    return {"layers": layers, "n_tokens": n, **{k: [s / n for s in v] for k, v in sums.items()}}


@torch.no_grad()
def layer_readouts(handle, facts: Sequence[Fact], lens: TunedLens | None, form: str = "blank",
                   *, batch_size: int = 16) -> dict:
    """Rank (0 = top) and probability of each fact's first answer token at its prompt's last position,
    read at every layer by the logit lens and (if given) the tuned read-out, plus the model's own."""
    if not facts:
        raise InputError("layer_readouts() needs at least one fact (repedit.suites.load_suite)")
    missing = [f.id for f in facts if form not in f.forms or form == "mc"]
    if missing:
        raise InputError(f"facts {missing[:5]} have no free-text form {form!r}")
    out = []
    for i in range(0, len(facts), batch_size):
        chunk = facts[i: i + batch_size]
        specs = [f.forms[form] for f in chunk]
        rows = [prompt_ids(handle, s["prompt"], s["chat"]) for s in specs]
        tokens = [answer_ids(handle, f.answer, s["chat"])[0] for f, s in zip(chunk, specs)]
        batch = pad_rows(rows, handle.pad_id, device=handle.input_device)
        h, logits = residuals(handle, batch["input_ids"], batch["attention_mask"])
        last = torch.tensor([len(r) - 1 for r in rows], device=h.device)
        h = h[torch.arange(len(rows), device=h.device), last]                # [b, layers, d]
        own = logits[torch.arange(len(rows), device=logits.device), last.to(logits.device)].float()
        tok = torch.tensor(tokens, device=own.device)
        reads = {"model": _rank_prob(own, tok)}
        for name, view in _lens_views(handle, h, lens).items():
            lg = _vocab_logits(handle, view.reshape(-1, view.shape[-1])).view(len(rows), handle.n_layers, -1)
            reads[name] = _rank_prob(lg, tok.to(lg.device)[:, None].expand(-1, handle.n_layers))
        for k, (f, t) in enumerate(zip(chunk, tokens)):
            rec = {"id": f.id, "answer": f.answer, "token": t, "token_text": handle.tokenizer.decode([t])}
            for name, (rank, prob) in reads.items():
                rec[name] = {"rank": rank[k].tolist(), "prob": prob[k].tolist()}
            out.append(rec)
    return {"model": handle.id, "form": form, "layers": list(range(handle.n_layers)),
            "output_layer": handle.n_layers - 1, "lenses": list(LENSES if lens is not None else LENSES[:1]),
            "facts": out}


def _rank_prob(logits: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank (count of strictly higher logits) and probability of `token` [...] in logits [..., vocab]."""
    at = logits.gather(-1, token[..., None])
    return (logits > at).sum(-1).cpu(), torch.softmax(logits, -1).gather(-1, token[..., None])[..., 0].cpu()


# ----- summaries -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LensSummary:
    """Per-layer numbers of one read-out over the facts, and the headline fractions."""

    mean_prob: tuple[float, ...]
    median_rank: tuple[float, ...]
    top_k: tuple[float, ...]                 #: fraction of facts with the answer in the top-k
    any_intermediate: float                  #: fraction in the top-k at some layer before the last
    output_top_k: float                      #: fraction in the top-k at the last layer (the model's output)
    best_layer: int                          #: intermediate layer with the largest top-k fraction (then probability)


@dataclass(frozen=True)
class ExtractionResult:
    """What the white-box read-outs recover of each fact; `readouts` is `layer_readouts`' record."""

    model: str
    form: str
    top_k: int
    n_facts: int
    lenses: dict[str, LensSummary]
    readouts: dict = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        return {name: {"any_intermediate": s.any_intermediate, "output_top_k": s.output_top_k,
                       "best_layer": s.best_layer} for name, s in self.lenses.items()}


def _in_top_k(readouts: dict, name: str, top_k: int) -> list[list[bool]]:
    return [[r < top_k for r in f[name]["rank"]] for f in readouts["facts"]]


def extraction_attack(handle, facts: Sequence[Fact], lens: TunedLens | None, *, top_k: int = 10,
                      form: str = "blank") -> ExtractionResult:
    """Read every fact at every layer (`layer_readouts`) and summarise per lens (see module docstring)."""
    if top_k < 1:
        raise ConfigError(f"top_k must be ≥ 1, got {top_k}")
    rd = layer_readouts(handle, facts, lens, form)
    n, L = len(rd["facts"]), len(rd["layers"])
    out = {}
    for name in rd["lenses"]:
        hits = _in_top_k(rd, name, top_k)
        frac = [sum(h[j] for h in hits) / n for j in range(L)]
        prob = [sum(f[name]["prob"][j] for f in rd["facts"]) / n for j in range(L)]
        out[name] = LensSummary(
            mean_prob=tuple(prob),
            median_rank=tuple(float(statistics.median(f[name]["rank"][j] for f in rd["facts"])) for j in range(L)),
            top_k=tuple(frac), any_intermediate=sum(any(h[:-1]) for h in hits) / n, output_top_k=frac[-1],
            best_layer=max(range(L - 1), key=lambda j: (frac[j], prob[j])) if L > 1 else 0)
    return ExtractionResult(handle.id, form, top_k, n, out, rd)


def compare_extraction(before: dict | ExtractionResult, after: dict | ExtractionResult, *,
                       top_k: int | None = None) -> dict:
    """Per lens: facts erased at the output (answer in the top-k at the last layer before the edit, not
    after) and how many of them are still in the top-k at some intermediate layer after ("recovered
    from intermediate states"). Takes `layer_readouts` records or `ExtractionResult`s (or their dicts)."""
    recs = []
    for x in (before, after):
        d = x.to_dict() if isinstance(x, ExtractionResult) else x
        recs.append((d.get("readouts", d), d.get("top_k")))
    (rb, kb), (ra, ka) = recs
    k = top_k or kb or ka or 10
    if [f["id"] for f in rb["facts"]] != [f["id"] for f in ra["facts"]] or rb["layers"] != ra["layers"]:
        raise InputError("compare_extraction() needs read-outs of the same facts and layers before and after")
    out = {"top_k": k, "n_facts": len(rb["facts"])}
    for name in [n for n in rb["lenses"] if n in ra["lenses"]]:
        hb, ha = _in_top_k(rb, name, k), _in_top_k(ra, name, k)
        erased = [f["id"] for f, b, a in zip(rb["facts"], hb, ha) if b[-1] and not a[-1]]
        recovered = [f["id"] for f, b, a in zip(rb["facts"], hb, ha) if b[-1] and not a[-1] and any(a[:-1])]
        out[name] = {
            "erased": erased, "recovered": recovered,
            "recovered_frac": len(recovered) / len(erased) if erased else None,
            "any_intermediate_before": sum(any(h[:-1]) for h in hb) / len(hb),
            "any_intermediate_after": sum(any(h[:-1]) for h in ha) / len(ha),
            "output_prob_before": [f[name]["prob"][-1] for f in rb["facts"]],
            "output_prob_after": [f[name]["prob"][-1] for f in ra["facts"]],
            "max_intermediate_prob_after": [max(f[name]["prob"][:-1], default=0.0) for f in ra["facts"]],
        }
    return out
