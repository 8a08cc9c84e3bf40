"""Causal tracing (ROME; Meng et al. 2022): which hidden states carry a fact to its answer.

Three runs of one prompt: clean; corrupted (Gaussian noise N(0, (noise·σ)²) added to the
embedding output at the subject's tokens, σ = std of the embedding matrix's entries, times the
model's embedding scale if it has one); and corrupted with one clean state restored. Kinds:

- ``resid``: the residual stream leaving layer l (``resid_post``) at token t;
- ``mlp`` / ``attn``: the sub-layer outputs (``mlp_out`` / ``attn_out``) at token t of a window
  of layers centred on l, ``range(max(0, l - w//2), min(n_layers, l - (-w//2)))``, with the
  default ``w = max(1, round(n_layers / 5))`` (10 on 48 layers as in ROME, 6 on SmolLM2's 30).

Score: probability of the answer's first token after the prompt, averaged over `samples` noise
draws; ``recovery = (restored − corrupted) / (clean − corrupted)``. Every restored (t, l) is one
row of a batch that shares the sample's noise. Weights are never written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from repedit.backends.base import get_backend
from repedit.errors import InputError
from repedit.forward.text import answer_ids, prompt_ids
from repedit.sites import Point

KINDS = ("resid", "mlp", "attn")
POINTS = {"resid": Point.RESID_POST, "mlp": Point.MLP_OUT, "attn": Point.ATTN_OUT}
ROLES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
         "further tokens", "last token")


def default_window(n_layers: int) -> int:
    """ROME's window (10 of 48 layers) as a rule: about a fifth of the layers."""
    return max(1, round(n_layers / 5))


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """The layers whose sub-layer outputs are restored for a trace at `layer` (centred, clipped)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def token_roles(n_tokens: int, span: tuple[int, int]) -> dict[str, list[int]]:
    """Token indices of each ROME role; a one-token subject is both first and last subject token."""
    s, e = span
    last = n_tokens - 1
    return {ROLES[0]: [s], ROLES[1]: list(range(s + 1, e - 1)), ROLES[2]: [e - 1],
            ROLES[3]: [e] if e < last else [], ROLES[4]: list(range(e + 1, last)), ROLES[5]: [last]}


def subject_span(tokenizer, ids: Sequence[int], subject: str, prompt: str = "") -> tuple[int, int]:
    """[start, end) token indices of the last occurrence of `subject` in the decoded `ids`."""
    needle = subject.strip()
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    text = tokenizer.decode(list(ids), **kw)
    c0 = text.rfind(needle) if needle else -1
    if c0 < 0:
        raise InputError(f"subject {subject!r} does not occur in prompt {prompt or text!r}")
    c1 = c0 + len(needle)
    ends = [len(tokenizer.decode(list(ids[: i + 1]), **kw)) for i in range(len(ids))]
    start = next(i for i, e in enumerate(ends) if e > c0)
    end = next(i for i, e in enumerate(ends) if e >= c1) + 1
    return start, end


def _nan_to_none(rows: torch.Tensor) -> list:
    return [[None if math.isnan(v) else v for v in row] for row in rows.tolist()]


@dataclass(frozen=True, eq=False)
class TraceResult:
    """One traced prompt. `restored[kind]`: float32 CPU [n_tokens, n_layers], the answer
    probability with that (token, layer) restored; columns follow `layers`."""

    prompt: str
    answer: str
    answer_token: str
    subject: str
    tokens: tuple[str, ...]
    subject_span: tuple[int, int]            # [start, end) token indices
    layers: tuple[int, ...]
    clean: float
    corrupted: float
    restored: dict[str, torch.Tensor] = field(repr=False)
    window: int = 1
    noise: float = 3.0
    noise_std: float = 0.0                   # absolute std of the added noise
    samples: int = 1
    seed: int = 0

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.restored)

    def recovery(self, kind: str = "mlp") -> torch.Tensor:
        """(restored − corrupted) / (clean − corrupted): [n_tokens, n_layers] (NaN if clean ≈ corrupted)."""
        if kind not in self.restored:
            raise InputError(f"kind {kind!r} was not traced; traced kinds: {list(self.restored)}")
        den = self.clean - self.corrupted
        if abs(den) < 1e-12:
            return torch.full_like(self.restored[kind], float("nan"))
        return (self.restored[kind] - self.corrupted) / den

    def roles(self) -> dict[str, list[int]]:
        return token_roles(len(self.tokens), self.subject_span)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "answer_token": self.answer_token,
                "subject": self.subject, "tokens": list(self.tokens), "subject_span": list(self.subject_span),
                "layers": list(self.layers), "clean": self.clean, "corrupted": self.corrupted,
                "window": self.window, "noise": self.noise, "noise_std": self.noise_std, "samples": self.samples,
                "seed": self.seed, "restored": {k: v.tolist() for k, v in self.restored.items()},
                "recovery": {k: _nan_to_none(self.recovery(k)) for k in self.restored}}


@dataclass(frozen=True, eq=False)
class TraceAggregate:
    """Mean recovery over facts per token role: `recovery[kind]` float32 CPU [6, n_layers] (rows
    follow ROLES; NaN where no fact has that role). Facts whose corruption did not lower the
    answer probability are left out of the means and listed in `skipped`."""

    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    recovery: dict[str, torch.Tensor] = field(repr=False)
    counts: tuple[int, ...]                  # facts contributing to each role
    results: tuple[TraceResult, ...] = field(repr=False)
    fact_ids: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    form: str = "blank"
    roles: tuple[str, ...] = ROLES

    @property
    def clean(self) -> float:
        return sum(r.clean for r in self.results) / max(len(self.results), 1)

    @property
    def corrupted(self) -> float:
        return sum(r.corrupted for r in self.results) / max(len(self.results), 1)

    def to_dict(self) -> dict:
        return {"form": self.form, "kinds": list(self.kinds), "layers": list(self.layers), "roles": list(self.roles),
                "counts": list(self.counts), "clean": self.clean, "corrupted": self.corrupted,
                "skipped": list(self.skipped), "recovery": {k: _nan_to_none(v) for k, v in self.recovery.items()},
                "facts": {fid: r.to_dict() for fid, r in zip(self.fact_ids, self.results)}}


def _noise_std(handle, noise: float) -> float:
    emb = handle.matrix("embed").param.detach()
    std = float(emb.float().std())
    if not handle.is_toy:                    # Gemma scales its embedding output by sqrt(d_model)
        std *= float(getattr(handle.model.get_input_embeddings(), "embed_scale", 1.0))
    return noise * std


def _restore(clean: torch.Tensor, rows: list[int], toks: list[int]):
    """Write clean [seq, d] states into (row, token) pairs of an activation [batch, seq, d]."""
    def fn(h: torch.Tensor) -> torch.Tensor:
        r = torch.as_tensor(rows, dtype=torch.long, device=h.device)
        t = torch.as_tensor(toks, dtype=torch.long, device=h.device)
        h = h.clone()
        h[r, t] = clean.to(h.device, h.dtype)[t]
        return h
    return fn


@torch.no_grad()
def causal_trace(handle, prompt: str, answer: str, subject: str, *, kinds: Sequence[str] = KINDS,
                 noise: float = 3.0, samples: int = 5, window: int | None = None, seed: int = 0,
                 layers: Sequence[int] | None = None, chat: bool = False, batch_size: int = 128) -> TraceResult:
    """Trace one fact: restored answer probabilities per kind, [n_tokens, len(layers)] each.

    `layers` (default all) picks the traced layers; `window` overrides the sub-layer window;
    `chat` renders the prompt in the model's chat template (as a fact form with "chat": true).
    """
    kinds = tuple(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in POINTS]
    if bad or not kinds:
        raise InputError(f"unknown trace kinds {bad or kinds}; valid kinds: {list(KINDS)}")
    if samples < 1 or noise <= 0 or batch_size < 1:
        raise InputError(f"need samples >= 1, noise > 0, batch_size >= 1 (got {samples}, {noise}, {batch_size})")
    n = handle.n_layers
    layers = tuple(range(n)) if layers is None else tuple(int(x) for x in layers)
    if not layers:
        raise InputError("layers must not be empty")
    for layer in layers:
        handle.check_layer(layer)
    w = default_window(n) if window is None else int(window)
    if w < 1:
        raise InputError(f"window must be >= 1, got {window}")
    ids = prompt_ids(handle, prompt, chat)
    ans = answer_ids(handle, answer, chat)
    if not ans:
        raise InputError(f"answer {answer!r} encodes to no tokens")
    target = ans[0]
    start, end = subject_span(handle.tokenizer, ids, subject, prompt)
    n_tok, pos = len(ids), len(ids) - 1

    def targets(kind: str, layer: int) -> range:
        return range(layer, layer + 1) if kind == "resid" else window_layers(layer, w, n)

    be = get_backend(handle, "torch")
    x = torch.tensor([ids], dtype=torch.long, device=handle.input_device)      # [1, seq]
    reads = sorted({(j, POINTS[k]) for k in kinds for layer in layers for j in targets(k, layer)})
    res = be.run(x, None, reads=reads)
    clean_p = float(torch.softmax(res.logits[0, pos].float(), -1)[target])
    clean = {key: a[0] for key, a in res.acts.items()}                           # [seq, d]

    configs = [None] + [(k, t, i) for k in kinds for t in range(n_tok) for i in range(len(layers))]
    sums = torch.zeros(len(configs), dtype=torch.float64, device="cpu")
    std = _noise_std(handle, noise)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(samples):
        eps = torch.randn((end - start, handle.d_model), generator=gen, device="cpu") * std   # [n_subj, d]

        def corrupt(h: torch.Tensor, eps=eps) -> torch.Tensor:
            h = h.clone()
            h[:, start:end] += eps.to(h.device, h.dtype)
            return h

        for c0 in range(0, len(configs), batch_size):
            chunk = configs[c0: c0 + batch_size]
            pairs: dict = {}
            for r, cfg in enumerate(chunk):
                if cfg is not None:
                    kind, t, i = cfg
                    for j in targets(kind, layers[i]):
                        pairs.setdefault((j, POINTS[kind]), ([], []))
                        pairs[(j, POINTS[kind])][0].append(r)
                        pairs[(j, POINTS[kind])][1].append(t)
            writes = {(0, Point.RESID_PRE): corrupt}
            writes.update({key: _restore(clean[key], rows, toks) for key, (rows, toks) in pairs.items()})
            logits = be.run(x.expand(len(chunk), -1), None, writes=writes).logits   # [rows, seq, vocab]
            p = torch.softmax(logits[:, pos].float(), -1)[:, target]
            sums[c0: c0 + len(chunk)] += p.double().cpu()
    means = (sums / samples).float()
    grid = means[1:].view(len(kinds), n_tok, len(layers))
    tok = handle.tokenizer
    return TraceResult(prompt=prompt, answer=answer, answer_token=tok.decode([target]), subject=subject,
                       tokens=tuple(tok.decode([i]) for i in ids), subject_span=(start, end), layers=layers,
                       clean=clean_p, corrupted=float(means[0]),
                       restored={k: grid[j].clone() for j, k in enumerate(kinds)},
                       window=w, noise=noise, noise_std=std, samples=samples, seed=seed)


def trace_facts(handle, facts: Sequence, form: str = "blank", *, progress: bool | None = None,
                **kw) -> TraceAggregate:
    """Trace every fact's `form` prompt and average recovery per ROME token role ([6, n_layers] per kind)."""
    if not facts:
        raise InputError("trace_facts() needs at least one fact")
    results = []
    for f in tqdm(facts, desc="trace", disable=not (progress if progress is not None else len(facts) > 3)):
        if form not in f.forms:
            raise InputError(f"fact {f.id!r} has no form {form!r}; forms: {sorted(f.forms)}")
        spec = f.forms[form]
        results.append(causal_trace(handle, spec["prompt"], f.answer, f.subject, chat=bool(spec.get("chat")), **kw))
    first = results[0]
    kinds, layers = first.kinds, first.layers
    keep = [r.clean - r.corrupted > 1e-6 for r in results]
    used = [r for r, k in zip(results, keep) if k]
    skipped = tuple(f.id for f, k in zip(facts, keep) if not k)
    recovery, counts = {}, [0] * len(ROLES)
    for kind in kinds:
        per_fact = []                                                           # each [6, n_layers]
        for r in used:
            rec, roles = r.recovery(kind), r.roles()
            rows = [rec[roles[name]].mean(0) if roles[name] else torch.full_like(rec[0], float("nan"))
                    for name in ROLES]
            per_fact.append(torch.stack(rows))
        if per_fact:
            stacked = torch.stack(per_fact)                                     # [n_facts, 6, n_layers]
            recovery[kind] = stacked.nanmean(0)
            counts = [int(c) for c in (~stacked[:, :, 0].isnan()).sum(0).tolist()]
        else:
            recovery[kind] = torch.full((len(ROLES), len(layers)), float("nan"), device="cpu")
    return TraceAggregate(kinds=kinds, layers=layers, recovery=recovery, counts=tuple(counts),
                          results=tuple(results), fact_ids=tuple(f.id for f in facts), skipped=skipped, form=form)


def _curve(trace, kind: str, at: str | int) -> torch.Tensor:
    """Recovery per traced layer [n_layers] at a role name (or, for a TraceResult, a token index)."""
    if isinstance(trace, TraceAggregate):
        if at not in ROLES:
            raise InputError(f"unknown role {at!r}; roles: {list(ROLES)}")
        if kind not in trace.recovery:
            raise InputError(f"kind {kind!r} was not traced; traced kinds: {list(trace.kinds)}")
        return trace.recovery[kind][ROLES.index(at)]
    rec = trace.recovery(kind)
    if isinstance(at, int):
        if not -len(trace.tokens) <= at < len(trace.tokens):
            raise InputError(f"token index {at} outside 0..{len(trace.tokens) - 1}")
        return rec[at]
    roles = trace.roles()
    if at not in roles:
        raise InputError(f"unknown role {at!r}; roles: {list(ROLES)}")
    if not roles[at]:
        raise InputError(f"the prompt {trace.prompt!r} has no {at!r}")
    return rec[roles[at]].mean(0)


def traced_layers(trace: TraceResult | TraceAggregate, kind: str = "mlp", n: int = 3,
                  role: str = "last subject token") -> tuple[int, ...]:
    """The `n` consecutive layers whose summed recovery at `role` is largest (ROCR's edit layers)."""
    curve = _curve(trace, kind, role)
    layers = trace.layers
    if n < 1 or n > len(layers):
        raise InputError(f"n must be in 1..{len(layers)} (traced layers), got {n}")
    best, best_i = -math.inf, None
    for i in range(len(layers) - n + 1):
        if list(layers[i: i + n]) != list(range(layers[i], layers[i] + n)):
            continue
        score = float(curve[i: i + n].sum())
        if not math.isnan(score) and score > best:
            best, best_i = score, i
    if best_i is None:
        raise InputError(f"no {n} consecutive traced layers with a finite {kind} recovery at {role!r}; "
                         f"traced layers: {list(layers)}")
    return tuple(layers[best_i: best_i + n])


class Peak(NamedTuple):
    where: str | int        # role name (aggregate, or `at` a role) or token index (TraceResult)
    layer: int
    recovery: float


def peak(trace: TraceResult | TraceAggregate, kind: str = "mlp", at: str | int | None = None) -> Peak:
    """The largest recovery of `kind`: over every row, or in one row (`at`: role or token index)."""
    if at is not None:
        curve = _curve(trace, kind, at).nan_to_num(nan=-math.inf)
        i = int(curve.argmax())
        return Peak(at, trace.layers[i], float(curve[i]))
    if kind not in trace.kinds:
        raise InputError(f"kind {kind!r} was not traced; traced kinds: {list(trace.kinds)}")
    mat = trace.recovery[kind] if isinstance(trace, TraceAggregate) else trace.recovery(kind)
    flat = int(mat.nan_to_num(nan=-math.inf).argmax())
    row, col = divmod(flat, mat.shape[1])
    where = ROLES[row] if isinstance(trace, TraceAggregate) else row
    return Peak(where, trace.layers[col], float(mat[row, col]))
