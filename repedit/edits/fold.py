"""Weight form of a residual-stream projection: fold it into every matrix that writes the stream.

A hook x_d ← T x_d + c at depth d (T = I − A Bᵀ with BᵀA = I, c = A Bᵀ μ; PGA's projection in
the raw frame: A = U ⊙ s, B = U / s; LEACE: A = proj_left, B = proj_rightᵀ) has no exact weight
form — the residual connection has no weight, and layers before d read the stream too. The folded
form applies T to the token embedding and to the attention-output and MLP-output matrices of layers
0..d−1, so no writer before depth d writes along A. The offset c is dropped: folded into the
embedding it passes through d norms at the wrong scale (measured: perplexity 31.9 → 30,100 for PGA
at depth 18). Layers before d then read a projected stream: this is a different edit from the hook,
and is measured as such. `proj` is anything with `.depth`, `.k`, `.method` and `.factors()`.

Supported: layouts whose residual writers are plain bias-free matrices (Llama, Qwen2, Mistral).
Models with tied input/output embeddings must be untied first (`untie_embeddings`), or T would
change the unembedding too.
"""

from __future__ import annotations

import torch

from repedit.edits.base import Edit, EditError, LowRankDelta, config_record


def untie_embeddings(handle) -> bool:
    """Give the output layer its own copy of the tied embedding matrix (logits unchanged).

    Returns True if the model was tied. The change is structural (config.tie_word_embeddings=False)
    and is saved by export; it is not an Edit and is not reverted by EditStack.
    """
    model = handle.model
    if handle.is_toy or not getattr(model.config, "tie_word_embeddings", False):
        return False
    out = model.get_output_embeddings()
    out.weight = torch.nn.Parameter(out.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = {} if isinstance(model._tied_weights_keys, dict) else []
    return True


def _is_tied(handle) -> bool:
    model = handle.model
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def fold_projection(handle, proj, config=None) -> Edit:
    """Edit that applies T to every residual writer before `proj.depth` (see the module doc).
    `config`: the config dataclass of the method that made `proj`, recorded in the edit in full."""
    if handle.is_toy or handle.layout.family != "llama":
        raise EditError(f"folding needs bias-free writers without post-norms (Llama family); "
                        f"{handle.id} is {handle.layout.family}")
    if _is_tied(handle):
        raise EditError("the input and output embeddings are tied; call repedit.edits.fold.untie_embeddings(handle) "
                        "first, or the projection would also change the unembedding")
    A, B = proj.factors()                                         # [d, k]; Bᵀ A = I
    deltas = []
    emb = handle.matrix("embed")                                  # [vocab, d]: rows are written vectors
    E = emb.param.detach().double()                               # float64 on the weight's device
    deltas.append(LowRankDelta(emb.name, (-(E @ B.to(E.device))).float(), A.float()))      # e ← T e
    for layer in range(proj.depth):
        for kind in ("attn_out", "mlp_out"):
            ref = handle.matrix(kind, layer)                      # [d, in]: W ← T W
            if ref.orientation != "out_in":
                raise EditError(f"{ref.name}: expected an [out, in] matrix, got {ref.orientation}")
            W = ref.param.detach().double()
            deltas.append(LowRankDelta(ref.name, (-A).float(), (W.T @ B.to(W.device)).float()))
    return Edit(method=f"{proj.method}-folded", deltas=tuple(deltas), model_id=handle.id,
                config=config_record(config, depth=proj.depth, k=proj.k,
                                     form="weights (folded into residual writers)"),
                target={"depth": proj.depth})
