"""A deliberate, crude unlearning for tests: gradient ascent on some sequences, on a copy of the model."""

from __future__ import annotations

import copy
import dataclasses

import torch


def unlearn(handle, seqs: torch.Tensor, steps: int, lr: float):
    """A new handle whose model is a deep copy of `handle.model` after `steps` of Adam gradient ascent
    on the next-token loss of `seqs` [n, seq]; the original handle is untouched."""
    model = copy.deepcopy(handle.model)
    new = dataclasses.replace(handle, model=model, id=f"{handle.id}+ga", extras=dict(handle.extras))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    seqs = seqs.to(new.input_device)
    with torch.enable_grad():
        for _ in range(steps):
            logits = new.forward(seqs).float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), seqs[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            (-nll).backward()
            opt.step()
    model.eval()
    return new
