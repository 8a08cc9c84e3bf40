"""Hook form of an edit: the same deltas applied to activations instead of weights (for exploration
and for checking that a merged edit does what its hook form does).

A low-rank delta on a linear layer's weight adds x·ΔWᵀ to that layer's output — exactly the change
merging makes, computed without touching the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .base import DenseDelta, Edit, EditError, LowRankDelta, check_edit


def _owner(model, param: str) -> tuple[torch.nn.Module, str]:
    mod_name, _, leaf = param.rpartition(".")
    return model.get_submodule(mod_name), leaf


@contextmanager
def hooked(handle, edit: Edit) -> Iterator[None]:
    """Run the model with `edit` as forward hooks (weights untouched). Low-rank and dense deltas on
    linear (and GPT-2 Conv1D) weights and low-rank deltas on embeddings; projector deltas and other
    parameters raise EditError."""
    check_edit(edit)
    handles = []
    try:
        for d in edit.deltas:
            if not isinstance(d, (LowRankDelta, DenseDelta)):
                raise EditError(f"{d.param}: only low-rank or dense deltas on weights have a hook form")
            module, leaf = _owner(handle.model, d.param)
            if leaf != "weight":
                raise EditError(f"{d.param}: hook form exists for weights of linear layers only")
            if isinstance(d, DenseDelta):
                if not isinstance(module, torch.nn.Linear):
                    raise EditError(f"{d.param}: dense hook form exists for torch.nn.Linear only")
                delta = d.d.detach()

                def fn(_m, args, out, delta=delta):
                    return out + args[0] @ delta.to(out.dtype).T
                handles.append(module.register_forward_hook(fn))
                continue
            u, v = d.u.detach(), d.v.detach()
            if isinstance(module, torch.nn.Embedding):          # weight [vocab, d]: Δe = u[ids] vᵀ
                def fn(_m, args, out, u=u, v=v):
                    return out + u[args[0]].to(out.dtype) @ v.to(out.dtype).T
            elif isinstance(module, torch.nn.Linear):            # weight [out, in]: Δy = (x v) uᵀ
                def fn(_m, args, out, u=u, v=v):
                    return out + (args[0] @ v.to(out.dtype)) @ u.to(out.dtype).T
            elif type(module).__name__ == "Conv1D":           # GPT-2: weight [in, out], y = x W
                def fn(_m, args, out, u=u, v=v):
                    return out + (args[0] @ u.to(out.dtype)) @ v.to(out.dtype).T
            else:
                raise EditError(f"{d.param}: module {type(module).__name__} has no hook form")
            handles.append(module.register_forward_hook(fn))
        if len(handles) != len(edit.deltas):
            raise EditError("not every delta got its hook")
        yield
    finally:
        for h in handles:
            h.remove()
