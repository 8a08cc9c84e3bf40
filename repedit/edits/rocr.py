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
- the redirect: a harmless concept H given per target (`edit(target, H)`), or `redirect = "refusal"`:
  ORT's optimised mode, z* found so that the model continues the target with a refusal
  (`repedit.edits.rocr_values.refusal_value`).
- `layers = "traced"`: per target, the `trace_width` consecutive layers whose MLP outputs carry the
  fact at the subject's last token (causal tracing, `repedit.locate.tracing`, on the fact's blank
  prompt); the protected null space and earlier keys are then kept per layer as layers come up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from repedit.edits.base import Edit, LowRankDelta, config_record
from repedit.edits.key_stats import key_moments, null_space
from repedit.edits.rocr_values import read_value, refusal_value
from repedit.edits.stack import applied
from repedit.errors import ConfigError, InputError
from repedit.forward.capture import capture
from repedit.models.presets import resolve_config
from repedit.sites import Site

REDIRECTS = ("unknown", "refusal")
CONTEXTS = ("Please answer the question about {}", "Tell me about {}", "Write something about {}",
            "Here is some information about {}", "Let me tell you about {}", "{}")


def _protected_key(P: torch.Tensor, k: torch.Tensor, prior: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """v = P (P K + λI)⁻¹ P k with K = k kᵀ + Σ prior keys' outer products (float64, [d]).

    K has rank r = 1 + len(prior), so P K = (P Mᵀ) M with M [r, d] the keys, and the Woodbury identity
    gives (λI + U M)⁻¹ b = (b − U (λI_r + M U)⁻¹ M b) / λ with U = P Mᵀ: an r × r solve instead of d × d
    (the same v up to float64 rounding)."""
    M = torch.stack([k, *(p.to(k.device, torch.float64) for p in prior)])        # [r, d]
    U = P @ M.T                                                                  # [d, r]
    b = U[:, 0]                                                                  # P k
    small = lam * torch.eye(len(M), dtype=torch.float64, device=k.device) + M @ U
    a = (b - U @ torch.linalg.solve(small, M @ b)) / lam
    return P @ a


@dataclass(frozen=True)
class ROCRConfig:
    """ROCR settings. `layers` None = the model's preset (`repedit.models.presets`; SmolLM2-135M: 4, 5, 6
    from `bench/rocr_layer_sweep.py`, README; other models: `repedit presets build <model>`)."""

    PRESET_SECTION: ClassVar[str] = "rocr"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layers",)

    layers: tuple[int, ...] | str | None = None  #: consecutive edit layers; "traced": per target; None: preset
    contexts: tuple[str, ...] = CONTEXTS      #: templates ending in the concept ("{}"), averaged for the key
    lam: float = 1.0                          #: ridge term λ
    null_threshold: float = 2e-2              #: relative eigenvalue threshold of the protected null space
    use_null_space: bool = True               #: False: plain rank-one edit (P = I)
    stats_tokens: int = 40_000                #: general-text tokens for C_l (cached per model/layer)
    redirect: str = "unknown"                 #: fact without redirect_to: "unknown" entity of its kind | "refusal"
    refusal: str = "Unfortunately"            #: the continuation the "refusal" value is optimised for
    refusal_steps: int = 20                   #: Adam steps of that value search
    protect_retain: bool = True               #: in recipes: keep the retain facts' subjects (their keys join K_p)
    trace_width: int = 3                      #: layers edited per target with layers = "traced"
    trace_samples: int = 3                    #: noise draws of that causal trace
    decoys: int = 0                           #: weight-diff mitigation: rank-one decoys per layer (edits/decoys)
    decoy_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            if self.layers != "traced":
                raise ConfigError(f"ROCRConfig.layers is a tuple of layers, None or 'traced', not {self.layers!r}")
        elif self.layers is not None and (not self.layers or list(self.layers) != sorted(set(self.layers))):
            raise ConfigError("ROCRConfig.layers must be a non-empty increasing tuple of layer indices")
        if self.redirect not in REDIRECTS:
            raise ConfigError(f"ROCRConfig.redirect must be one of {list(REDIRECTS)}, got {self.redirect!r} "
                              "(a harmless concept per fact goes in the fact's 'redirect_to')")
        if self.decoys < 0:
            raise ConfigError("ROCRConfig.decoys must be >= 0 (0 = no decoy directions)")
        if self.trace_width < 1 or self.trace_samples < 1 or self.refusal_steps < 1:
            raise ConfigError("ROCRConfig needs trace_width, trace_samples and refusal_steps >= 1")
        if not self.contexts or any(not c.rstrip().endswith("{}") for c in self.contexts):
            raise ConfigError("every ROCR context must end with '{}' (the concept's last token is read)")
        if self.lam <= 0 or not 0 < self.null_threshold < 1 or self.stats_tokens < 1000:
            raise ConfigError("need lam > 0, 0 < null_threshold < 1 and stats_tokens >= 1000")


class ROCR:
    """Builds ROCR edits for one model; remembers earlier targets' keys so that a sequence of edits
    (pushed on one EditStack) does not undo itself."""

    def __init__(self, handle, config: ROCRConfig | None = None, progress: bool = False,
                 protect: Sequence[str] = ()):
        self.handle, self.progress = handle, progress
        self.config = resolve_config(config or ROCRConfig(), handle)   # None fields from the model's preset
        self.projectors: dict[int, torch.Tensor] = {}
        self.prior_keys: dict[int, list[torch.Tensor]] = {}
        self.stats_seconds = 0.0
        # concepts to keep (MEMIT-style preservation): their keys join K_p at every layer edited
        self.protected = [str(c) for c in protect]
        self.edited: list[str] = []
        if not isinstance(self.config.layers, str):
            self._prepare(self.config.layers)

    def _prepare(self, layers: Sequence[int]) -> None:
        """Null-space projectors and prior keys (protected concepts, earlier targets) for new layers."""
        new = [int(l) for l in layers if int(l) not in self.projectors]
        if not new:
            return
        for layer in new:
            self.handle.check_layer(layer)
        moments, seconds = key_moments(self.handle, new, n_tokens=self.config.stats_tokens, progress=self.progress)
        self.stats_seconds += seconds
        # float64 on the CPU: the solve is tiny and precision-critical; results are cast at the boundary
        eye = torch.eye(self.handle.d_mlp, dtype=torch.float64, device="cpu")
        for layer, m in moments.items():
            self.projectors[layer] = null_space(m, self.config.null_threshold).double() \
                if self.config.use_null_space else eye
            self.prior_keys[layer] = []
        for concept in self.protected + self.edited:         # earlier targets' keys read on the model as it is now
            for layer, k in self._keys(concept, new).items():
                self.prior_keys[layer].append(k)

    def _keys(self, concept: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        texts = [c.format(concept) for c in self.config.contexts]
        sites = [Site(l, "mlp_hidden") for l in layers]
        acts = capture(self.handle, texts, sites, progress=False)
        return {s.layer: acts[s].double().mean(0).cpu() for s in sites}   # float64 keys for the solve

    def _value(self, concept: str, layer: int) -> torch.Tensor:
        return read_value(self.handle, concept, layer, self.config.contexts[0])

    def layers_for(self, target: str, fact=None) -> tuple[int, ...]:
        """The edit layers for `target`: the config's, or traced on `fact` (its blank prompt)."""
        if not isinstance(self.config.layers, str):
            return tuple(self.config.layers)
        if fact is None:
            raise InputError(f"ROCR layers = 'traced' needs the fact of {target!r} (a prompt and its answer) to "
                             "trace; pass fact= or give layers explicitly")
        from repedit.locate.tracing import causal_trace, traced_layers

        form = fact.forms.get("blank") or next(iter(fact.forms.values()))
        trace = causal_trace(self.handle, form["prompt"], fact.answer, fact.subject, kinds=("mlp",),
                             samples=self.config.trace_samples)
        return tuple(traced_layers(trace, kind="mlp", n=self.config.trace_width))

    def edit(self, target: str, redirect_to: str | None = None, *, remember: bool = True, fact=None) -> Edit:
        """A rank-one-per-layer edit making `target` read like `redirect_to` (not yet applied); with
        `redirect_to` None the config's `redirect = "refusal"` value search is used. `fact` (a Fact of the
        target) is needed by layers = "traced"."""
        if redirect_to is None and self.config.redirect != "refusal":
            raise InputError("give a harmless concept to redirect to, or set ROCRConfig(redirect='refusal')")
        if not target.strip() or (redirect_to is not None and (not redirect_to.strip()
                                                               or target.strip() == redirect_to.strip())):
            raise InputError("give a target concept and a different, harmless concept to redirect it to")
        t0 = time.perf_counter()
        cfg, h = self.config, self.handle
        layers = self.layers_for(target, fact)
        self._prepare(layers)
        last = layers[-1]
        keys = self._keys(target, layers)
        value_stats = {}
        if redirect_to is None:
            z_star, value_stats = refusal_value(h, target, last, cfg.contexts, cfg.refusal, steps=cfg.refusal_steps)
        else:
            z_star = self._value(redirect_to, last)
        deltas: list[LowRankDelta] = []
        n = len(layers)
        residual_norms, decoyed = [], []
        for i, layer in enumerate(layers):
            if deltas:
                with applied(h, Edit("rocr-partial", tuple(deltas), h.id)):
                    current = self._value(target, last)
            else:
                current = self._value(target, last)
            r = (z_star - current) / (n - i)
            residual_norms.append(float((z_star - current).norm()))
            k = keys[layer].double()
            v = _protected_key(self.projectors[layer].double(), k, self.prior_keys[layer], cfg.lam).float()
            ref = h.matrix("mlp_out", layer)
            u = r.float()[:, None]
            v = v[:, None]
            if cfg.decoys:                            # decoys join after the residual check below
                decoyed.append((layer, ref, u, v))
            deltas.append(LowRankDelta(ref.name, u, v) if ref.orientation == "out_in"
                          else LowRankDelta(ref.name, v, u))
        with applied(h, Edit("rocr-partial", tuple(deltas), h.id)):
            final = float((z_star - self._value(target, last)).norm())
        if decoyed:
            deltas = self._with_decoys(decoyed, len(self.edited))
        prior = len(self.prior_keys[layers[0]])
        if remember:
            self.edited.append(target)
            others = [l for l in self.prior_keys if l not in keys]       # layers earlier targets were edited at
            keys |= self._keys(target, others) if others else {}
            for layer in self.prior_keys:
                self.prior_keys[layer].append(keys[layer].double())
        cfg_dict = config_record(cfg)
        return Edit(method="rocr", deltas=tuple(deltas), model_id=h.id, config=cfg_dict,
                    target={"concept": target, "redirect_to": redirect_to or f"refusal: {cfg.refusal}"},
                    stats={"residual_norm_before": residual_norms[0], "residual_norm_after": final,
                           "seconds": round(time.perf_counter() - t0, 3), "layers": list(layers),
                           "prior_keys": prior, "protected": len(self.protected), **value_stats})

    def _with_decoys(self, decoyed: list, index: int) -> list[LowRankDelta]:
        """Each layer's rank-one delta with `decoys` random rank-one terms keyed in its null space."""
        from repedit.edits.decoys import decoy_factors

        out = []
        for layer, ref, u, v in decoyed:
            U, V = decoy_factors(u, v, self.projectors[layer], self.config.decoys,
                                 seed=self.config.decoy_seed + 1000 * index + layer)
            out.append(LowRankDelta(ref.name, U, V) if ref.orientation == "out_in" else LowRankDelta(ref.name, V, U))
        return out

    def edits(self, pairs: Sequence[tuple[str, str | None]], stack, facts: Sequence | None = None) -> list[Edit]:
        """Sequential editing: build and push one edit per (target, redirect_to) onto `stack`."""
        out = []
        for i, (target, redirect) in enumerate(pairs):
            e = self.edit(target, redirect, fact=facts[i] if facts else None)
            stack.push(e)
            out.append(e)
        return out
