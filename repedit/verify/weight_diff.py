"""Weight-diff attack: an attacker holding both the base and the edited weights reads the edit out.

Per touched weight, D = W_edited − W_base (float32) and its top-k singular directions. Directions in
the residual stream — what the matrix writes (its output side) or, for matrices that read the residual,
what it reads — are read out two ways, each with both signs (an SVD's sign is arbitrary):
- ``vocab``: through the final norm and the unembedding (the logit lens of that direction);
- ``patch``: added to the *base* model's residual right after the edited layer, at the last token of
  Patchscope's identity prompt ("Syria: Syria; leaf: leaf; …;"), at 0.5× and 1× that layer's median
  residual norm; the base model's next token names what the direction means to it (Ghandeharioun et al.
  2024). Measured on a rank-one ROCR edit of France: 0.5–1× beat 2–4×, and adding beat replacing;
- ``keys``: given candidate names (the suite's subjects), what an MLP output matrix *reads* (its key-side
  singular vectors) is compared with each candidate's key on the base model ("Tell me about {}"); the
  rank of the target among the candidates by |cosine|.
Embedding rows additionally rank tokens by how much their row changed. For each forget fact the attack
reports the best (lowest) rank of its subject's and its answer's first token over every direction,
sign and weight: rank 0 = the attacker's first guess names it. The same read-outs of as many random
directions (``*_control``) say what rank a direction that knows nothing gets (the identity prompt alone
ranks some country names high). Rank-one edits are the most exposed;
`repedit.edits.decoys` is the mitigation, with its cost measured in the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from repedit.errors import InputError
from repedit.forward.text import answer_ids
from repedit.forward.weights import holding
from repedit.suites import Fact

IDENTITY = "Syria: Syria; leaf: leaf; Microsoft: Microsoft;"   #: Patchscope's identity prompt: "x: x;" pairs
SCALES = (0.5, 1.0)                          #: patched norms, as multiples of the layer's median residual norm
NAMED = 50   #: a token read-out names a fact at a rank below this and below a tenth of its random control


READOUTS = ("subject_vocab", "answer_vocab", "subject_patch", "answer_patch", "subject_keys")
CONTROLS = ("subject_vocab_control", "answer_vocab_control", "subject_patch_control", "answer_patch_control")


@dataclass(frozen=True)
class WeightDiffResult:
    """params: per weight its top singular values and each direction's top tokens; facts: per fact the best
    rank of its subject's / answer's token per read-out; summary: medians and the share of facts named."""

    params: dict[str, dict]
    facts: list[dict]
    summary: dict[str, float | None]

    def to_dict(self) -> dict:
        return {"params": self.params, "facts": self.facts, "summary": self.summary}


def _owner(handle, name: str) -> nn.Module:
    return handle.model.get_submodule(name.rsplit(".", 1)[0])


def _sides(handle, name: str, d: torch.Tensor) -> tuple[str | None, str | None]:
    """(which factor writes the residual, which reads it): "u" (rows), "v" (columns) or None."""
    mod, dm = _owner(handle, name), handle.d_model
    if isinstance(mod, nn.Embedding):
        return None, "v"                                    # rows are tokens; columns the residual
    rows_out = type(mod).__name__ != "Conv1D"               # Linear: [out, in]; GPT-2's Conv1D: [in, out]
    out_dim, in_dim = (d.shape[0], d.shape[1]) if rows_out else (d.shape[1], d.shape[0])
    write = ("u" if rows_out else "v") if out_dim == dm else None
    read = ("v" if rows_out else "u") if in_dim == dm and write is None else None
    return write, read


def _layer_of(handle, name: str) -> int | None:
    prefix = handle.layout.layers + "."
    head = name[len(prefix):].split(".", 1)[0] if name.startswith(prefix) else ""
    return int(head) if head.isdigit() else None


def _token(handle, text: str, first: bool = True) -> int:
    ids = answer_ids(handle, text, False)
    return ids[0] if first else ids[-1]


def _ranks(scores: torch.Tensor, tokens: Sequence[int]) -> list[int]:
    """Rank (0 = top: the count of strictly higher scores) of each token in each row of scores [n, vocab],
    the best over rows, per token."""
    return [int((scores > scores[:, t:t + 1]).sum(-1).min()) for t in tokens]


@torch.no_grad()
def _patch_logits(handle, layer: int, dirs: torch.Tensor) -> torch.Tensor:
    """Base-model next-token log-probs [n_dirs × len(SCALES), vocab] on the identity prompt with each unit
    direction added after `layer` at the last token, at each of SCALES × the layer's median residual norm."""
    module = handle.layer_module(layer)
    ids = handle.encode([IDENTITY])["input_ids"].repeat(len(dirs) * len(SCALES), 1)

    def add(_m, _a, o):
        h = o[0] if isinstance(o, tuple) else o
        scale = h[0, 1:].float().norm(dim=-1).median()
        mult = torch.tensor(SCALES, dtype=torch.float32, device=h.device).repeat_interleave(len(dirs))
        h = h.clone()
        h[:, -1] += (dirs.to(h.device, torch.float32).repeat(len(SCALES), 1) * (mult * scale)[:, None]).to(h.dtype)
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h

    hook = module.register_forward_hook(add)
    try:
        return torch.log_softmax(handle.logits(ids)[:, -1].float(), -1)
    finally:
        hook.remove()


@torch.no_grad()
def _candidate_keys(handle, layer: int, names: Sequence[str]) -> torch.Tensor:
    """Each candidate's MLP key at `layer` (last token of "Tell me about {name}"): [n, d_mlp] float32."""
    from repedit.forward.capture import capture
    from repedit.sites import Site

    site = Site(layer, "mlp_hidden")
    return capture(handle, [f"Tell me about {n}" for n in names], [site], progress=False)[site].float()


@torch.no_grad()
def weight_diff_attack(handle, base: dict[str, torch.Tensor], facts: Sequence[Fact], *, k: int = 8,
                       patch: bool = True, candidates: Sequence[str] = (), top_tokens: int = 5) -> WeightDiffResult:
    """Read the edit out of `W_current − base` (see the module doc). `base`: {param: its value before the
    edits} (`EditStack.originals()`); the model holds the edited weights. `candidates`: names the attacker
    suspects (the forget subjects are added)."""
    if not base:
        raise InputError("the weight-diff attack needs the base values of the edited parameters "
                         "(EditStack.originals())")
    if not facts:
        raise InputError("the weight-diff attack needs the forget facts whose tokens it looks for")
    from repedit.locate.concept_vectors import project_to_vocab

    params = dict(handle.model.named_parameters())
    subj = [_token(handle, f.subject, first=False) for f in facts]      # a name's last token: "Fr|ance"
    ans = [_token(handle, f.answer) for f in facts]
    best = {key: [np.inf] * len(facts) for key in READOUTS + CONTROLS}

    def keep(key: str, scores: torch.Tensor, tokens: Sequence[int]) -> None:
        best[key] = [min(b, x) for b, x in zip(best[key], _ranks(scores, tokens))]

    gen = torch.Generator(device="cpu").manual_seed(0)      # control: random directions, read the same way
    names = list(dict.fromkeys([*candidates, *(f.subject for f in facts)])) if candidates else []
    on_base = []                                            # (layer, directions, control, key directions)
    per_param = {}
    for name, w0 in base.items():
        d = (params[name].detach().float() - w0.to(params[name].device).float())
        if d.ndim != 2 or not bool(d.abs().max() > 0):
            continue
        U, S, Vh = torch.linalg.svd(d, full_matrices=False)
        r = min(k, int((S > S[0] * 1e-4).sum()))         # float32 differences leave ~1e-6 noise
        write, read = _sides(handle, name, d)
        side = write or read
        row = {"singular_values": [round(float(s), 6) for s in S[:r]], "side": "writes" if write else "reads"}
        if side is not None:
            dirs = (U[:, :r].T if side == "u" else Vh[:r]).contiguous()
            both = torch.cat([dirs, -dirs])                                         # [2r, d_model]
            ctrl = torch.randn(both.shape, generator=gen, dtype=torch.float32, device="cpu").to(both.device)
            ctrl = ctrl / ctrl.norm(dim=-1, keepdim=True) * both.norm(dim=-1, keepdim=True)
            scores = project_to_vocab(handle, both.to(handle.device, params[name].dtype)).float()
            cscores = project_to_vocab(handle, ctrl.to(handle.device, params[name].dtype)).float()
            keep("subject_vocab_control", cscores, subj)
            keep("answer_vocab_control", cscores, ans)
            row["top_tokens"] = [handle.tokenizer.decode(scores[i].topk(top_tokens).indices.tolist())
                                 for i in range(r)]
            keep("subject_vocab", scores, subj)
            keep("answer_vocab", scores, ans)
            layer = _layer_of(handle, name)
            reads_keys = write == "u" and d.shape[1] == handle.d_mlp or write == "v" and d.shape[0] == handle.d_mlp
            kdirs = (Vh[:r] if write == "u" else U[:, :r].T) if names and reads_keys else None
            if layer is not None and (patch and write or kdirs is not None):
                on_base.append((layer, both if patch and write else None, ctrl, kdirs))
        if isinstance(_owner(handle, name), nn.Embedding):                       # tokens whose rows moved most
            moved = d.norm(dim=1)[None]
            row["most_changed_tokens"] = handle.tokenizer.decode(moved[0].topk(top_tokens).indices.tolist())
            keep("subject_vocab", moved, subj)
            keep("answer_vocab", moved, ans)
        per_param[name] = row
    keys_at: dict[int, torch.Tensor] = {}
    with holding(handle, base if on_base else {}):           # the base model, once for every read-out on it
        for layer, both, ctrl, kdirs in on_base:
            if both is not None:
                logits = _patch_logits(handle, layer, both / both.norm(dim=-1, keepdim=True))
                clogits = _patch_logits(handle, layer, ctrl / ctrl.norm(dim=-1, keepdim=True))
                for key, toks in (("subject_patch", subj), ("answer_patch", ans)):
                    keep(key, logits, toks)
                    keep(key + "_control", clogits, toks)
            if kdirs is not None:
                if layer not in keys_at:
                    keys_at[layer] = _candidate_keys(handle, layer, names)
                cos = (torch.nn.functional.normalize(keys_at[layer], dim=-1)
                       @ kdirs.to(keys_at[layer].device).T).abs().amax(-1)         # [n_names]
                best["subject_keys"] = [min(b, _ranks(cos[None], [names.index(f.subject)])[0])
                                        for b, f in zip(best["subject_keys"], facts)]
    rows = [{"id": f.id, "subject": f.subject, "answer": f.answer,
             **{key: (None if np.isinf(v[i]) else int(v[i])) for key, v in best.items()}}
            for i, f in enumerate(facts)]
    return WeightDiffResult(per_param, rows, _summary(rows))


def _summary(rows: list[dict]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in READOUTS + CONTROLS:
        vals = [r[key] for r in rows if r[key] is not None]
        out[f"{key}_median_rank"] = float(np.median(vals)) if vals else None
    token = [k for k in READOUTS if k != "subject_keys"]
    named = [r["subject_keys"] == 0 or any(r[k] is not None and r[k] < NAMED and r[k] < 0.1 * r[k + "_control"]
                                           for k in token) for r in rows]
    out["keys_top1_share"] = (float(np.mean([r["subject_keys"] == 0 for r in rows]))
                              if any(r["subject_keys"] is not None for r in rows) else None)
    out["named_share"] = float(np.mean(named))
    return out
