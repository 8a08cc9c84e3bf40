"""Training forwards that compute only what answer log-probs need: every form's fact rows packed into a few
sequences, each form's shared prompt prefix once, no padding, only answer positions unembedded
(`PackedFacts`), and `answer_scorer`, the differentiable forget / retain answer log-probs that MRP, GA and
NPO train on (the right-padded per-form `fact_batch` forwards where packing does not apply)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from repedit.forward.passes import fact_batch, unembedding_only
from repedit.suites import Fact

Scorer = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def answer_scorer(handle, forget: Sequence[Fact], retain: Sequence[Fact], forms: Sequence[str]) -> Scorer:
    """A function returning the mean answer-token log-probs (differentiable) of the forget and the retain facts
    in every form: (forget [forms × forget], retain [forms × retain]), form-major as per-form `fact_batch` rows
    give them; `retain` may be empty (its part is then an empty tensor).

    Hugging Face causal LMs with eager or SDPA attention run `PackedFacts` (every form's rows in one forward,
    each form's shared prompt prefix once, no padding); other models, and rows longer than a sliding attention
    window (the packed mask has none), a right-padded `fact_batch` per form and set (the reference)."""
    n, facts = len(forget), list(forget) + list(retain)
    batches = [fact_batch(handle, facts, form) for form in forms]
    if not packable(handle, batches):
        fb = [fact_batch(handle, forget, form) for form in forms]
        rb = [fact_batch(handle, retain, form) for form in forms] if retain else []

        def padded():
            f = torch.cat([b.answer_logprobs(handle) for b in fb])
            return f, (torch.cat([b.answer_logprobs(handle) for b in rb]) if rb else f.new_zeros(0))
        return padded
    packed, per = PackedFacts.of(handle, batches), len(facts)

    def score():
        lp = packed.answer_logprobs(handle)                             # [forms × facts], form-major
        return (torch.cat([lp[i * per: i * per + n] for i in range(len(forms))]),
                torch.cat([lp[i * per + n: (i + 1) * per] for i in range(len(forms))]))
    return score


def packs(handle) -> bool:
    """Whether the model takes a ready 4D attention mask, `position_ids` and `logits_to_keep` (HF causal LMs
    with eager or SDPA attention; flash attention takes no arbitrary mask)."""
    from repedit.forward.generation import keeps_tail_logits

    impl = getattr(getattr(handle.model, "config", None), "_attn_implementation", None)
    return keeps_tail_logits(handle) and impl in ("eager", "sdpa")


def packable(handle, groups: Sequence) -> bool:
    """Whether `groups` (each with `.prompts` and `.answers` token lists) can run as `PackedFacts` on this
    model: it `packs`, and no row is longer than a sliding attention window (the packed mask has none)."""
    window = getattr(getattr(handle.model, "config", None), "sliding_window", None)
    longest = max((len(p) + len(a) for g in groups for p, a in zip(g.prompts, g.answers)), default=0)
    return packs(handle) and not (window and longest > window)


@dataclass(frozen=True)
class Rows:
    """Token rows of one group for `PackedFacts.of`: prompts and the answers after them (rows of a group
    share their common prompt prefix in the packed forward)."""

    prompts: list[list[int]]
    answers: list[list[int]]

    @classmethod
    def last_tokens(cls, rows: Sequence[list[int]], pad_id: int) -> Rows:
        """Rows whose last token is the one read (`PackedFacts.hidden_after`): each row is the prompt, its
        answer a one-token placeholder that is never fed."""
        return cls([list(r) for r in rows], [[pad_id]] * len(rows))


@torch.no_grad()
def packed_logprobs(handle, groups: Sequence[Rows]) -> list[float] | None:
    """Mean log-prob per answer token of every row of `groups`, in order, from one `PackedFacts` forward
    (each group's prompt prefix once, no padding); None where the model does not pack them (`packable`)."""
    if not groups or not packable(handle, groups):
        return None
    return PackedFacts.of(handle, groups).answer_logprobs(handle).tolist()


@dataclass(frozen=True)
class PackedFacts:
    """Rows prompt + answer of several batches (`FactBatch`, one per form) packed for a training forward that
    computes only what the answer log-probs need. Each batch's common prompt prefix appears once per packed
    sequence and its rows' own tokens follow it back to back; a 4D mask lets every token see the prefix and
    the earlier tokens of its own row only, and `position_ids` count as in the row alone — so every row is
    computed as if alone (up to float rounding), without padding, and gradients reach the prefix from every
    row. Each row's last answer token is left out (no answer position reads it, attention being causal) and
    only the answer positions are unembedded. Rows go to ceil(tokens / `max_tokens`) sequences (attention is
    quadratic in their length), longest first to the shortest sequence; a sequence holding rows of a batch
    holds that batch's prefix (so a prefix may appear once per sequence)."""

    input_ids: torch.Tensor          # [seqs, T]
    position_ids: torch.Tensor       # [seqs, T]
    allowed: torch.Tensor            # [seqs, 1, T, T] bool: query may attend key
    keep: torch.Tensor               # [K] positions HF slices before unembedding (the union over sequences)
    pick: tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # (sequence, index into keep, answer token) per answer token
    row_of: torch.Tensor             # [answer tokens] the row each belongs to
    lengths: torch.Tensor            # [rows] answer lengths (float)
    answers: list[list[int]]

    @classmethod
    def of(cls, handle, batches, max_tokens: int = 256) -> PackedFacts:
        import math
        import os

        prefixes, items = [], []                         # items: (batch, own tokens, answer) per row
        for bi, b in enumerate(batches):
            rows = [p + a[:-1] for p, a in zip(b.prompts, b.answers)]      # the last answer token: never read
            n = min(len(os.path.commonprefix(rows)), min(len(p) for p in b.prompts) - 1) if len(rows) > 1 else 0
            prefixes.append(rows[0][:n])
            items += [(bi, r[n:], a) for r, a in zip(rows, b.answers)]
        total = sum(map(len, prefixes)) + sum(len(own) for _, own, _ in items)
        S = min(len(items), max(1, math.ceil(total / max_tokens)))
        load, members, has = [0] * S, [[] for _ in range(S)], [set() for _ in range(S)]
        for k in sorted(range(len(items)), key=lambda k: -len(items[k][1])):   # longest first, to the lightest
            bi, own, _ = items[k]
            cost = [len(own) + (0 if bi in has[j] else len(prefixes[bi])) for j in range(S)]
            j = min(range(S), key=lambda j: (load[j] + cost[j], j))
            load[j] += cost[j]
            has[j].add(bi)
            members[j].append(k)
        seqs: list[list[tuple[int, int, int]]] = []      # per sequence: (token, position, segment)
        marks: list = [None] * len(items)                # per row: (sequence, first answer position, end)
        prefix_of: dict[int, int] = {}                   # segment -> the segment of the prefix it sees
        segment = 0
        for j in (j for j in range(S) if members[j]):
            q: list[tuple[int, int, int]] = []
            for bi in sorted(has[j]):                    # each batch's prefix, then its rows
                segment += 1
                group = prefix_of[segment] = segment
                q += [(t, i, group) for i, t in enumerate(prefixes[bi])]
                for k in sorted(k for k in members[j] if items[k][0] == bi):
                    segment += 1
                    prefix_of[segment] = group
                    q += [(t, len(prefixes[bi]) + i, segment) for i, t in enumerate(items[k][1])]
                    marks[k] = (len(seqs), len(q) - len(items[k][2]), len(q))   # these positions predict the answer
            seqs.append(q)
        answers = [a for _, _, a in items]
        T = max(len(q) for q in seqs)
        dev = handle.input_device
        ids = torch.full((len(seqs), T), handle.pad_id, dtype=torch.long, device="cpu")   # built here, moved once
        pos = torch.zeros((len(seqs), T), dtype=torch.long, device="cpu")
        seg = torch.zeros((len(seqs), T), dtype=torch.long, device="cpu")          # 0: padding
        for j, q in enumerate(seqs):
            ids[j, : len(q)], pos[j, : len(q)], seg[j, : len(q)] = torch.tensor(q, device="cpu").T
        pre = torch.tensor([prefix_of.get(int(x), 0) for x in seg.flatten()], device="cpu").view_as(seg)
        causal = torch.ones(T, T, dtype=torch.bool, device="cpu").tril()
        same = seg[:, :, None] == seg[:, None, :]                    # [seqs, q, k]
        to_prefix = (pre[:, :, None] == seg[:, None, :]) & (pre[:, None, :] == seg[:, None, :])
        allowed = causal & (same | to_prefix)                        # padding sees itself only
        keep = sorted({p for _, a0, e in marks for p in range(a0, e)})
        index = {p: i for i, p in enumerate(keep)}
        pick = [(j, index[p], t, r) for r, ((j, a0, e), a) in enumerate(zip(marks, answers))
                for p, t in zip(range(a0, e), a)]
        seq_i, keep_i, token, row = (torch.tensor(c, device=dev) for c in zip(*pick))
        return cls(ids.to(dev), pos.to(dev), allowed[:, None].to(dev), torch.tensor(keep, device=dev),
                   (seq_i, keep_i, token), row, torch.tensor([float(len(a)) for a in answers], device=dev), answers)

    def _mask(self, handle) -> torch.Tensor:
        dtype = handle.dtype
        mask = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return mask.masked_fill(~self.allowed, torch.finfo(dtype).min)

    def residual_after(self, handle, layer: int) -> torch.Tensor:
        """Residual stream [seqs, T, d_model] after block `layer` of the packed sequences; the forward stops
        there. Gradients are kept (inside `forward.passes.start_at`, blocks below its layer are skipped)."""
        from repedit.forward.passes import run_until

        mask = self._mask(handle)
        return run_until(handle, layer, lambda: handle.model(input_ids=self.input_ids, attention_mask=mask,
                                                             position_ids=self.position_ids, use_cache=False))

    def hidden_after(self, handle, layer: int) -> torch.Tensor:
        """Residual stream after block `layer` at every answer-predicting position, in `pick` order:
        [answer tokens, d_model] (for `Rows.last_tokens`: each row's last token, one per row)."""
        h = self.residual_after(handle, layer)
        seq_i, keep_i, _ = self.pick
        return h[seq_i.to(h.device), self.keep.to(h.device)[keep_i.to(h.device)]]

    def answer_logprobs(self, handle) -> torch.Tensor:
        """Mean log-prob per answer token of every row, differentiable: [rows]."""
        mask = self._mask(handle)
        seq_i, keep_i, token = self.pick

        # the unembedding sees each answer position once
        with unembedding_only(handle, lambda h: h[seq_i.to(h.device), keep_i.to(h.device)]):
            logits = handle.model(input_ids=self.input_ids, attention_mask=mask, position_ids=self.position_ids,
                                  use_cache=False, logits_to_keep=self.keep).logits[0]   # [answer tokens, vocab]
        logp = torch.log_softmax(logits.float(), -1)
        picked = logp[torch.arange(len(token), device=logp.device), token.to(logp.device)]
        sums = torch.zeros(len(self.answers), device=logp.device).index_add(0, self.row_of.to(logp.device), picked)
        return sums / self.lengths.to(logp.device)
