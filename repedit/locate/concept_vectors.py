"""Concept vectors: MLP value vectors (columns of W_out) whose vocabulary projection is about a concept.

Following ConceptVectors (Hong et al. 2024): a candidate is column j of layer l's MLP output
matrix. Its vocabulary projection is `unembed(final_norm(W_out[:, j]))`; it is scored by how many
of the concept's tokens are among its top-k (k = 200) projected tokens (ties broken by the best
rank of a concept token). Candidates are then validated causally by `validate` (see
repedit.locate.causal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from repedit.errors import InputError


@dataclass(frozen=True)
class ConceptVector:
    """One located value vector: layer, column of W_out, score and its top projected tokens."""

    layer: int
    column: int
    hits: int                      # concept tokens among the top-k projected tokens
    best_rank: int                 # best rank of a concept token (0 = top)
    top_tokens: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class ConceptVectorLocation:
    concept: str
    concept_tokens: tuple[str, ...]
    top_k: int
    candidates: tuple[ConceptVector, ...]            # best first
    hits_per_layer: tuple[int, ...] = field(repr=False)  # best hits in each layer (for plots)

    def to_dict(self) -> dict:
        return {"concept": self.concept, "concept_tokens": list(self.concept_tokens), "top_k": self.top_k,
                "hits_per_layer": list(self.hits_per_layer),
                "candidates": [{"layer": c.layer, "column": c.column, "hits": c.hits, "best_rank": c.best_rank,
                                "top_tokens": list(c.top_tokens[:20])} for c in self.candidates]}


def concept_token_ids(tokenizer, words: Sequence[str], min_cover: float = 0.75) -> list[int]:
    """Tokens standing for each word in its common surface forms (' Word', 'Word', ' word', ' WORD'):
    the whole form when it is one token, else its first token if it covers at least `min_cover`
    of the word's characters (so 'French' -> ' French', but never a stray 'f' or 'par')."""
    if isinstance(words, str) or not words:
        raise InputError("concept words must be a non-empty list of strings, e.g. ['Paris', 'French']")
    ids: set[int] = set()
    for w in words:
        w = w.strip()
        if not w:
            continue
        for form in {f" {w}", w, f" {w.lower()}", f" {w.capitalize()}", w.lower(), f" {w.upper()}"}:
            toks = tokenizer.encode(form, add_special_tokens=False)
            if not toks:
                continue
            first = tokenizer.decode([toks[0]]).strip()
            if len(toks) == 1 or len(first) >= min_cover * len(w):
                ids.add(toks[0])
    if not ids:
        raise InputError(f"none of {list(words)} produced a token")
    return sorted(ids)


def _value_vectors(handle, layer: int) -> torch.Tensor:
    """Columns of W_out as rows: [d_mlp, d_model]."""
    ref = handle.matrix("mlp_out", layer)
    w = ref.param.detach()
    return w.T if ref.orientation == "out_in" else w


@torch.no_grad()
def project_to_vocab(handle, vectors: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits of residual-space vectors [n, d_model] -> [n, vocab], through the final
    norm and the unembedding (a norm rescales each vector, which leaves top tokens unchanged)."""
    model = handle.model
    norm = model.get_submodule(handle.layout.final_norm)
    x = norm(vectors[:, None, :])[:, 0, :] if handle.is_toy else norm(vectors)
    if handle.is_toy:
        return model.unembed(x[:, None, :])[:, 0, :]
    return model.get_output_embeddings()(x)


@torch.no_grad()
def concept_vectors(handle, concept: str, words: Sequence[str] | None = None, *, layers: Sequence[int] | None = None,
                    top_k: int = 200, n_candidates: int = 10, chunk: int = 512,
                    progress: bool = True) -> ConceptVectorLocation:
    """Rank MLP value vectors by how concept-heavy their top-`top_k` projected tokens are.

    `words` (default: the words of `concept`) are the concept's name, aliases and related words.
    """
    if not concept or not isinstance(concept, str):
        raise InputError("concept must be a non-empty string, e.g. 'Paris'")
    words = list(words) if words else concept.split()
    ids = torch.tensor(concept_token_ids(handle.tokenizer, words), device=handle.matrix("unembed").param.device)
    layers = list(range(handle.n_layers)) if layers is None else list(layers)
    for layer in layers:
        handle.check_layer(layer)
    if not 1 <= top_k <= handle.d_vocab:
        raise InputError(f"top_k must be in 1..{handle.d_vocab}")
    found: list[tuple[int, int, int, int]] = []  # (hits, -best_rank, layer, column)
    per_layer = []
    for layer in tqdm(layers, disable=not progress, desc=f"concept vectors: {concept}"):
        vecs = _value_vectors(handle, layer)
        best = 0
        for start in range(0, vecs.shape[0], chunk):
            top = project_to_vocab(handle, vecs[start: start + chunk]).topk(top_k, dim=-1).indices  # [c, k]
            member = torch.isin(top, ids.to(top.device))                                           # [c, k]
            hits = member.sum(-1)
            ranks = torch.arange(top_k, device=member.device).expand_as(member)
            rank = torch.where(member, ranks, top_k).min(-1).values
            for j in torch.nonzero(hits).flatten().tolist():
                found.append((int(hits[j]), -int(rank[j]), layer, start + j))
            best = max(best, int(hits.max()))
        per_layer.append(best)
    found.sort(reverse=True)
    cands = []
    for hits, neg_rank, layer, col in found[:n_candidates]:
        vec = _value_vectors(handle, layer)[col: col + 1]
        top = project_to_vocab(handle, vec)[0].topk(top_k).indices.tolist()
        cands.append(ConceptVector(layer, col, hits, -neg_rank, tuple(handle.tokenizer.decode([t]) for t in top)))
    concept_tokens = tuple(handle.tokenizer.decode([i]) for i in ids.tolist())
    return ConceptVectorLocation(concept=concept, concept_tokens=concept_tokens,
                                 top_k=top_k, candidates=tuple(cands), hits_per_layer=tuple(per_layer))


@torch.no_grad()
def trace_metrics(handle, layer: int, column: int, before: torch.Tensor, top_k: int = 200) -> dict[str, float]:
    """Intrinsic metrics of an edited value vector against its original `before` [d_model]:
    cosine, L2 distance and Jaccard overlap of the top-`top_k` projected tokens."""
    after = _value_vectors(handle, layer)[column]
    if before.shape != after.shape:
        raise InputError(f"before must have shape {tuple(after.shape)}")
    tops = project_to_vocab(handle, torch.stack([before, after])).topk(top_k, dim=-1).indices
    a, b = set(tops[0].tolist()), set(tops[1].tolist())
    cos = float(torch.nn.functional.cosine_similarity(before, after, dim=0)) if after.norm() > 0 else 0.0
    return {"cosine": cos, "l2": float((before - after).norm()), "jaccard": len(a & b) / len(a | b)}
