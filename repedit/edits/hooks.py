"""Hook form of an edit: the same deltas applied to activations instead of weights (for exploration
and for checking that a merged edit does what its hook form does).

A low-rank delta on a linear layer's weight adds x·ΔWᵀ to that layer's output — exactly the change
merging makes, computed without touching the weights. The change is computed in float32 with the
factors on the module's device and cast once to the activation's dtype, so on half-precision models
the hook form differs from the merged form only by the rounding of the merged weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from repedit.edits.base import DenseDelta, Edit, EditError, LowRankDelta, check_edit


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
                delta = d.d.detach().to(module.weight.device, torch.float32)

                def fn(_m, args, out, delta=delta):          # float32 change, cast once
                    return out + (args[0].float() @ delta.T).to(out.dtype)
                handles.append(module.register_forward_hook(fn))
                continue
            dev = module.weight.device                          # factors follow the weight they change
            u, v = d.u.detach().to(dev, torch.float32), d.v.detach().to(dev, torch.float32)
            if isinstance(module, torch.nn.Embedding):          # weight [vocab, d]: Δe = u[ids] vᵀ
                def fn(_m, args, out, u=u, v=v):
                    return out + (u[args[0]] @ v.T).to(out.dtype)
            elif isinstance(module, torch.nn.Linear):            # weight [out, in]: Δy = (x v) uᵀ
                def fn(_m, args, out, u=u, v=v):
                    return out + ((args[0].float() @ v) @ u.T).to(out.dtype)
            elif type(module).__name__ == "Conv1D":           # GPT-2: weight [in, out], y = x W
                def fn(_m, args, out, u=u, v=v):
                    return out + ((args[0].float() @ u) @ v.T).to(out.dtype)
            else:
                raise EditError(f"{d.param}: module {type(module).__name__} has no hook form")
            handles.append(module.register_forward_hook(fn))
        if len(handles) != len(edit.deltas):
            raise EditError("not every delta got its hook")
        yield
    finally:
        for h in handles:
            h.remove()
