"""Trainable low-rank deltas on MLP output matrices, and the key subspace they should leave alone.

`TrainableLowRank` holds U [d_model, r] (starts at 0, so the edit starts as the identity) and
V [d_mlp, r] per layer and, inside its `with` block, adds x V Uᵀ to each down_proj output as a
forward hook — the hook form of `LowRankDelta` — so gradients reach only U and V; `deltas()`
gives the mergeable edit. V is kept orthogonal to a protected basis Q (V ← V − Q QᵀV).
`sink_keys_basis` finds the basis worth protecting on most models: the MLP keys at position 0
(the attention-sink token) are orders of magnitude larger than in-context keys at some layers
(SmolLM2-135M: 20× at layer 8, 3000× at layer 11), so a delta that reads them changes every text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from repedit.edits.base import LowRankDelta
from repedit.errors import InputError


@torch.no_grad()
def sink_keys_basis(handle, layers: Sequence[int], energy: float, max_dims: int, n_tokens: int = 512,
                    seed: int = 0) -> dict[int, torch.Tensor]:
    """Per layer, an orthonormal basis Q [d_mlp, k] of the MLP keys at position 0 (the attention-sink
    position; its keys depend on the token alone and are huge at some layers): the top principal
    directions of those keys up to `energy` of their second moment, at most `max_dims`."""
    from repedit.backends.base import get_backend
    from repedit.sites import Point

    g = torch.Generator(device="cpu").manual_seed(seed)                 # drawn on the CPU: the same ids anywhere
    ids = torch.randint(0, handle.d_vocab, (n_tokens, 1), generator=g, device="cpu")
    specials = [t for t in (handle.tokenizer.bos_token_id, handle.tokenizer.eos_token_id) if t is not None]
    ids = torch.cat([ids, torch.tensor(specials, dtype=torch.long, device="cpu")[:, None]]) if specials else ids
    reads = [(layer, Point.MLP_HIDDEN) for layer in layers]
    acts = get_backend(handle, "torch").run(ids, torch.ones_like(ids), reads=reads, stop_early=True).acts
    out = {}
    for layer, key in zip(layers, reads):
        _, s, vt = torch.linalg.svd(acts[key][:, 0].double(), full_matrices=False)
        share = (s ** 2).cumsum(0) / (s ** 2).sum()
        k = min(int((share < energy).sum()) + 1, max_dims)
        out[layer] = vt[:k].T.float().contiguous()                 # SVD in float64, the basis in float32
    return out


class TrainableLowRank:
    """Rank-`rank` factors per layer, used as forward hooks inside `with`. V starts orthonormal with
    its first column along `keys[layer]` (e.g. the target's mean MLP key), the rest seeded noise;
    `protect[layer]` is that layer's basis Q (from `sink_keys_basis`), or absent for none. U, V and Q
    are float32 on the device of the matrix they change, whatever the model's dtype: the hook computes
    the added term in float32 and casts it once to the module output's dtype."""

    def __init__(self, handle, layers: Sequence[int], rank: int, keys: dict[int, torch.Tensor],
                 protect: dict[int, torch.Tensor], seed: int):
        g = torch.Generator(device="cpu").manual_seed(seed)     # noise drawn on the CPU: the same init anywhere
        f32 = torch.float32
        self.refs, self.modules, self.u, self.v, self.q = [], [], [], [], []
        for layer in layers:
            ref = handle.matrix("mlp_out", layer)
            module = handle.model.get_submodule(ref.name.rpartition(".")[0])
            if not isinstance(module, torch.nn.Linear) and type(module).__name__ != "Conv1D":
                raise InputError(f"low-rank training edits linear MLP output matrices; "
                                 f"{ref.name} is {type(module).__name__}")
            dev = ref.param.device
            q = protect[layer].to(dev, f32) if layer in protect else torch.zeros(handle.d_mlp, 0, device=dev, dtype=f32)
            noise = torch.randn(handle.d_mlp, rank - 1, generator=g, device="cpu").to(dev)
            init = self._v(torch.cat([keys[layer].to(dev, f32)[:, None], noise], 1), q)
            self.refs.append(ref), self.modules.append(module), self.q.append(q)
            self.u.append(torch.zeros(handle.d_model, rank, device=dev, dtype=f32, requires_grad=True))  # U=0: identity
            self.v.append(torch.linalg.qr(init)[0].contiguous().requires_grad_(True))
        self.handles: list = []

    @staticmethod
    def _v(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return v - q @ (q.T @ v)                # V with its protected components removed

    def __enter__(self):
        for module, u, v, q in zip(self.modules, self.u, self.v, self.q):
            self.handles.append(module.register_forward_hook(
                lambda _m, args, out, u=u, v=v, q=q: out + ((args[0].float() @ self._v(v, q)) @ u.T).to(out.dtype)))
        return self

    def __exit__(self, *exc) -> None:
        while self.handles:
            self.handles.pop().remove()

    def deltas(self) -> tuple[LowRankDelta, ...]:
        """W ← W + U Vᵀ in the parameter's layout ([out, in] for nn.Linear, [in, out] for GPT-2 Conv1D)."""
        uv = [(ref, u.detach().clone(), self._v(v.detach(), q).contiguous())
              for ref, u, v, q in zip(self.refs, self.u, self.v, self.q)]
        return tuple(LowRankDelta(ref.name, u, v) if ref.orientation == "out_in" else LowRankDelta(ref.name, v, u)
                     for ref, u, v in uv)
