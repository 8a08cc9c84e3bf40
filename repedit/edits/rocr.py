"""ROCR — rank-one concept redirection ("LLM Unlearning Should Be Form-Independent", 2025).

Training-free: make the model perceive target concept T as a harmless concept H by rank-one edits
of W_out at a few consecutive layers.
- key k_l: input of W_out at the last token of T, averaged over several contexts ending in T;
- target value z*: residual output of the last edit layer L at the last token of H (first context);
- for edit layer i of n (in order) the residual r_i = (z* − h_L(T)) / (n − i), with h_L(T) re-read
  after the earlier layers' edits;
- null-space protection (AlphaEdit): P projects onto eigen-directions of the key second moment
  C_l = E[kkᵀ] (general text) below `null_threshold` × the largest eigenvalue; with K_p the keys of
  earlier ROCR edits at this layer, a = (P(kkᵀ + K_pᵀK_p) + λI)⁻¹ P k and ΔW_out = r (P a)ᵀ
  (AlphaEdit's final update ΔP: keys of general text — the range of C — are left alone).
- optional `protect=[concepts]`: their keys are added to K_p from the start, so edits keep the
  model's response to them (MEMIT-style preservation; measured in bench/rocr_effect.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..capture import capture
from ..errors import ConfigError, InputError
from ..models.presets import resolve_config
from ..sites import Site
from .base import Edit, LowRankDelta, config_record
from .key_stats import key_moments, null_space
from .stack import applied

CONTEXTS = ("Please answer the question about {}", "Tell me about {}", "Write something about {}",
            "Here is some information about {}", "Let me tell you about {}", "{}")


@dataclass(frozen=True)
class ROCRConfig:
    """ROCR settings. `layers` None = the model's preset (`repedit.models.presets`; SmolLM2-135M: 4, 5, 6
    from `bench/rocr_layer_sweep.py`, README; other models: `repedit presets build <model>`)."""

    PRESET_SECTION: ClassVar[str] = "rocr"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layers",)

    layers: tuple[int, ...] | None = None    #: consecutive edit layers (None: the model's preset)
    contexts: tuple[str, ...] = CONTEXTS      #: templates ending in the concept ("{}"), averaged for the key
    lam: float = 1.0                          #: ridge term λ
    null_threshold: float = 2e-2              #: relative eigenvalue threshold of the protected null space
    use_null_space: bool = True               #: False: plain rank-one edit (P = I)
    stats_tokens: int = 40_000                #: general-text tokens for C_l (cached per model/layer)

    def __post_init__(self) -> None:
        if self.layers is not None and (not self.layers or list(self.layers) != sorted(set(self.layers))):
            raise ConfigError("ROCRConfig.layers must be a non-empty increasing tuple of layer indices")
        if not self.contexts or any(not c.rstrip().endswith("{}") for c in self.contexts):
            raise ConfigError("every ROCR context must end with '{}' (the concept's last token is read)")
        if self.lam <= 0 or not 0 < self.null_threshold < 1 or self.stats_tokens < 1000:
            raise ConfigError("need lam > 0, 0 < null_threshold < 1 and stats_tokens >= 1000")


class ROCR:
    """Builds ROCR edits for one model; remembers earlier targets' keys so that a sequence of edits
    (pushed on one EditStack) does not undo itself."""

    def __init__(self, handle, config: ROCRConfig | None = None, progress: bool = False,
                 protect: Sequence[str] = ()):
        self.handle = handle
        self.config = resolve_config(config or ROCRConfig(), handle)   # None fields from the model's preset
        for layer in self.config.layers:
            handle.check_layer(layer)
        moments, self.stats_seconds = key_moments(handle, self.config.layers, n_tokens=self.config.stats_tokens,
                                                  progress=progress)
        # float64 on the CPU: the solve is tiny and precision-critical; results are cast at the boundary
        eye = torch.eye(handle.d_mlp, dtype=torch.float64, device="cpu")
        self.projectors = {l: (null_space(m, self.config.null_threshold).double() if self.config.use_null_space
                               else eye) for l, m in moments.items()}
        self.prior_keys: dict[int, list[torch.Tensor]] = {l: [] for l in self.config.layers}
        # concepts to keep (MEMIT-style preservation): their keys join K_p from the start
        self.protected = [str(c) for c in protect]
        for concept in self.protected:
            for layer, k in self._keys(concept).items():
                self.prior_keys[layer].append(k.double())

    def _keys(self, concept: str) -> dict[int, torch.Tensor]:
        texts = [c.format(concept) for c in self.config.contexts]
        sites = [Site(l, "mlp_hidden") for l in self.config.layers]
        acts = capture(self.handle, texts, sites, progress=False)
        return {s.layer: acts[s].double().mean(0).cpu() for s in sites}   # float64 keys for the solve

    def _value(self, concept: str, layer: int) -> torch.Tensor:
        site = Site(layer, "resid_post")
        acts = capture(self.handle, [self.config.contexts[0].format(concept)], [site], progress=False)[site]
        return acts[0].double().cpu()

    def edit(self, target: str, redirect_to: str, *, remember: bool = True) -> Edit:
        """A rank-one-per-layer edit making `target` read like `redirect_to` (not yet applied)."""
        if not target.strip() or not redirect_to.strip() or target.strip() == redirect_to.strip():
            raise InputError("give a target concept and a different, harmless concept to redirect it to")
        t0 = time.perf_counter()
        cfg, h = self.config, self.handle
        last = cfg.layers[-1]
        keys = self._keys(target)
        z_star = self._value(redirect_to, last)
        deltas: list[LowRankDelta] = []
        n = len(cfg.layers)
        residual_norms = []
        for i, layer in enumerate(cfg.layers):
            if deltas:
                with applied(h, Edit("rocr-partial", tuple(deltas), h.id)):
                    current = self._value(target, last)
            else:
                current = self._value(target, last)
            r = (z_star - current) / (n - i)
            residual_norms.append(float((z_star - current).norm()))
            k = keys[layer].double()
            P = self.projectors[layer].double()
            K = torch.outer(k, k)
            if self.prior_keys[layer]:
                Kp = torch.stack(self.prior_keys[layer]).double()
                K = K + Kp.T @ Kp
            a = torch.linalg.solve(P @ K + cfg.lam * torch.eye(len(k), dtype=torch.float64, device=k.device), P @ k)
            v = (P @ a).float()
            ref = h.matrix("mlp_out", layer)
            u = r.float()[:, None]
            deltas.append(LowRankDelta(ref.name, u, v[:, None]) if ref.orientation == "out_in"
                          else LowRankDelta(ref.name, v[:, None], u))
        with applied(h, Edit("rocr-partial", tuple(deltas), h.id)):
            final = float((z_star - self._value(target, last)).norm())
        if remember:
            for layer in cfg.layers:
                self.prior_keys[layer].append(keys[layer].double())
        cfg_dict = config_record(cfg)
        return Edit(method="rocr", deltas=tuple(deltas), model_id=h.id, config=cfg_dict,
                    target={"concept": target, "redirect_to": redirect_to},
                    stats={"residual_norm_before": residual_norms[0], "residual_norm_after": final,
                           "seconds": round(time.perf_counter() - t0, 3),
                           "prior_keys": len(self.prior_keys[cfg.layers[0]]) - (1 if remember else 0),
                           "protected": len(self.protected)})

    def edits(self, pairs: Sequence[tuple[str, str]], stack) -> list[Edit]:
        """Sequential editing: build and push one edit per (target, redirect_to) onto `stack`."""
        out = []
        for target, redirect in pairs:
            e = self.edit(target, redirect)
            stack.push(e)
            out.append(e)
        return out
