"""Ablation edits from locator output: value vectors (concept vectors), knowledge neurons, SAE latents.

Value-vector and neuron edits are mergeable weight edits on the MLP output matrix (rank = number
of units touched). SAE latent clamping acts on activations only; it is a hook, not a weight edit,
and says so (`SAEClamp.mergeable is False`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from repedit.edits.base import Edit, LowRankDelta
from repedit.errors import InputError


def _unit_delta(handle, layer: int, units: Sequence[int], change: torch.Tensor) -> LowRankDelta:
    """Delta adding `change` [d_model, r] to the value vectors `units` of layer `layer`'s W_out."""
    ref = handle.matrix("mlp_out", layer)
    onehot = torch.zeros(handle.d_mlp, len(units), dtype=torch.float32, device=ref.param.device)
    onehot[torch.as_tensor(list(units), device=onehot.device), torch.arange(len(units), device=onehot.device)] = 1
    change = change.to(onehot.device, torch.float32)        # factors in float32, on the weight's device
    if ref.orientation == "out_in":        # [d_model, d_mlp]: value vectors are columns
        return LowRankDelta(ref.name, change, onehot)
    if ref.orientation == "in_out":        # [d_mlp, d_model]: value vectors are rows
        return LowRankDelta(ref.name, onehot, change)
    raise InputError(f"unsupported W_out orientation {ref.orientation!r}")


def _value_vectors(handle, layer: int, units: Sequence[int]) -> torch.Tensor:
    """[d_model, r] current value vectors."""
    ref = handle.matrix("mlp_out", layer)
    w = ref.param.detach()
    idx = torch.as_tensor(list(units), device=w.device)
    return (w[:, idx] if ref.orientation == "out_in" else w[idx].T).float()


def _check_units(handle, layer: int, units: Sequence[int]) -> list[int]:
    handle.check_layer(layer)
    units = [int(u) for u in units]
    if not units or len(set(units)) != len(units) or min(units) < 0 or max(units) >= handle.d_mlp:
        raise InputError(f"units must be distinct indices in 0..{handle.d_mlp - 1}, got {units}")
    return units


def value_vector_edit(handle, layer: int, columns: Sequence[int], *, mode: str = "zero", noise_std: float = 0.1,
                      seed: int = 0) -> Edit:
    """Zero (mode="zero") or perturb with N(0, noise_std²) (mode="noise") concept-vector columns of W_out."""
    if mode not in ("zero", "noise"):
        raise InputError(f"mode must be 'zero' or 'noise', got {mode!r}")
    if noise_std <= 0:
        raise InputError("noise_std must be positive")
    cols = _check_units(handle, layer, columns)
    if mode == "zero":
        change = -_value_vectors(handle, layer, cols)
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)          # same noise on every device
        change = noise_std * torch.randn(handle.d_model, len(cols), generator=g, device="cpu")
    return Edit(method=f"value-vector-{mode}", deltas=(_unit_delta(handle, layer, cols, change),),
                model_id=handle.id,
                config={"function": "value_vector_edit", "mode": mode, "noise_std": noise_std, "seed": seed},
                target={"layer": layer, "columns": cols})


def neuron_edit(handle, neurons: Mapping[int, Sequence[int]], *, factor: float = 0.0) -> Edit:
    """Scale knowledge neurons' output by `factor` as a weight edit: 0 suppresses, 2 amplifies.

    Scaling unit i's activation by f equals scaling its W_out value vector by f, so this merged
    form matches the activation hook `repedit.locate.causal.neuron_writes` (contract test).
    """
    if not neurons:
        raise InputError("give neurons as {layer: [unit, ...]}, e.g. knowledge_neurons(...) output")
    deltas = []
    for layer, units in sorted(neurons.items()):
        units = _check_units(handle, int(layer), units)
        change = (factor - 1.0) * _value_vectors(handle, int(layer), units)
        deltas.append(_unit_delta(handle, int(layer), units, change))
    return Edit(method="neuron-scale", deltas=tuple(deltas), model_id=handle.id,
                config={"function": "neuron_edit", "factor": factor},
                target={"neurons": {int(k): [int(u) for u in v] for k, v in neurons.items()}})


@dataclass(frozen=True)
class SAEClamp:
    """Inference-time SAE steering: set latents to `value` (or scale them by `scale`) at the SAE's site.

    h ← h + (f' − f) W_dec, where f is the SAE code of h and f' the clamped code: only the clamped
    latents' reconstructed contribution changes; the SAE's reconstruction error is kept.
    Not mergeable into weights: use `active(handle)` (or `writes(handle)` with a backend).
    """

    sae: object
    latents: tuple[int, ...]
    value: float | None = 0.0
    scale: float | None = None
    mergeable = False

    def __post_init__(self) -> None:
        if (self.value is None) == (self.scale is None):
            raise InputError("give exactly one of value= (clamp) or scale= (multiply)")
        d_sae = self.sae.W_dec.shape[0]
        if not self.latents or min(self.latents) < 0 or max(self.latents) >= d_sae:
            raise InputError(f"latents must be indices in 0..{d_sae - 1}")

    def _rewrite(self, h: torch.Tensor) -> torch.Tensor:
        from repedit.fit.saes import sae_on

        sae = sae_on(self.sae, h.device)
        idx = torch.as_tensor(self.latents, device=h.device)
        with torch.no_grad():
            f = sae.encode(h.to(sae.W_dec.dtype))
            new = f[..., idx] * self.scale if self.scale is not None else torch.full_like(f[..., idx], self.value)
            diff = (new - f[..., idx]) @ sae.W_dec[idx]
        return h + diff.to(h.dtype)

    def writes(self, handle) -> dict:
        from repedit.locate.sae_features import sae_site

        site = sae_site(self.sae)
        handle.check_site(site)
        return {(site.layer, site.point): self._rewrite}

    @contextmanager
    def active(self, handle) -> Iterator[None]:
        """Install the rewrite as a forward hook for the duration of a `with` block (generation works)."""
        from repedit.backends.torch_hooks import installed

        with installed(handle, self.writes(handle)):
            yield
