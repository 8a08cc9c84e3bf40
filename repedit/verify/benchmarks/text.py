"""Shared pieces of the benchmark metrics: answer log-probs after a question, greedy answers, ROUGE-L
(Google's `rouge_score`, the implementation TOFU and MUSE score with, Porter stemmer on), per-token
log-probs of a text and Min-K% / AUC membership scores."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from repedit.errors import InputError, ReprEditError
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids
from repedit.models.handle import pad_rows
from repedit.suites.answers import mentions_answer as mentions  # noqa: F401  (re-exported: one answer-matching rule)
from repedit.verify.recall import greedy


class MissingExtraError(ReprEditError, ImportError):
    """An optional dependency a metric needs is not installed (the message names the extra)."""


def normalised_probs(handle, questions: Sequence[str], answers: Sequence[str], chat: bool = True) -> np.ndarray:
    """TOFU's per-item probability: exp(mean log-prob per answer token), i.e. the geometric mean of the
    answer tokens' probabilities after the question."""
    prompts = [prompt_ids(handle, q, chat) for q in questions]
    conts = [answer_ids(handle, a, chat) for a in answers]
    return np.exp(np.array(continuation_logprobs(handle, prompts, conts), dtype=np.float64))


def generate(handle, prompts: Sequence[str], chat: bool, max_new_tokens: int) -> list[str]:
    """Greedy continuations (no teacher forcing)."""
    return greedy(handle, [prompt_ids(handle, p, chat) for p in prompts], max_new_tokens)


def _scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise MissingExtraError("ROUGE metrics (TOFU, MUSE) use Google's rouge_score, as the benchmarks do: "
                                "pip install 'repedit[benchmarks]' (rouge-score)") from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """ROUGE-L recall and F1 of each prediction against its reference."""
    sc = _scorer()
    scores = [sc.score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references)]
    return {"recall": np.array([s.recall for s in scores]), "f1": np.array([s.fmeasure for s in scores])}


def token_logprobs(handle, texts: Sequence[str], max_tokens: int = 512, batch_size: int = 8) -> list[np.ndarray]:
    """Log-prob of every token of each text after its prefix (the first token has none)."""
    tok = handle.tokenizer
    return row_logprobs(handle, [tok.encode(t, add_special_tokens=True)[:max_tokens] for t in texts], batch_size)


@torch.no_grad()
def row_logprobs(handle, rows: Sequence[list[int]], batch_size: int = 8, *, moments: bool = False) -> list[np.ndarray]:
    """Per token row, the log-prob of every token after the first: [n-1] (float64). With `moments`,
    [3, n-1]: log p(x_t), then the mean and std of log p(z) over z ~ p(·|x_<t) (Min-K%++'s μ_t, σ_t)."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = [list(r) for r in rows[i:i + batch_size]]
        batch = pad_rows(chunk, handle.pad_id, device=handle.input_device)          # right padding
        logits = handle.logits(batch["input_ids"], batch["attention_mask"])
        for j, ids in enumerate(chunk):
            logp = torch.log_softmax(logits[j, :len(ids) - 1].float(), -1)         # [n-1, vocab], one row at a time
            target = batch["input_ids"][j, 1:len(ids)].to(logp.device)
            cols = [logp.gather(-1, target[:, None])[:, 0]]
            if moments:
                p = logp.exp()
                mu = (p * logp).sum(-1)
                cols += [mu, ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()]
            out.append(torch.stack(cols).squeeze(0).cpu().double().numpy())
    return out


def min_k(logprobs: np.ndarray, k: float = 0.4) -> float:
    """Min-K% Prob (Shi et al. 2024): the mean of the lowest k fraction of token log-probs (higher =
    more member-like)."""
    if len(logprobs) == 0:
        return 0.0
    n = max(1, math.ceil(len(logprobs) * k))
    return float(np.sort(logprobs)[:n].mean())


def auc(members: Sequence[float], non_members: Sequence[float]) -> float:
    """ROC AUC of telling members (score higher) from non-members (rank-based; ties count 0.5)."""
    from sklearn.metrics import roc_auc_score

    if len(members) == 0 or len(non_members) == 0:
        raise InputError(f"AUC needs members and non-members, got {len(members)} and {len(non_members)}")
    y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(y, np.r_[np.asarray(members, float), np.asarray(non_members, float)]))
