"""SAE features: latents of a sparse autoencoder that fire on a concept, or separate known from
unknown entities (Ferrando et al. 2024).

`sae_features` ranks latents by mean activation on the concept's texts minus on control texts.
`known_unknown_latents` encodes the last token of each entity name in a neutral frame and ranks
latents by the difference in how often they fire on known vs unknown entities; a logistic probe
on the SAE codes (cross-validated) says how well codes alone separate the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from repedit.errors import InputError
from repedit.forward.capture import capture
from repedit.locate.probe_directions import fit_probe
from repedit.sites import Site


def sae_site(sae, position: int | None = -1) -> Site:
    """The model site an sae-lens SAE reads (from its metadata hook name)."""
    name = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if not name:
        raise InputError("this SAE's cfg has no metadata.hook_name; pass site= explicitly")
    return Site.parse(name, position=position)


@torch.no_grad()
def encode_texts(handle, sae, texts: Sequence[str], site: Site) -> torch.Tensor:
    """SAE codes [n, d_sae] at `site` (position None: mean over tokens after position 0)."""
    acts = capture(handle, list(texts), [site])[site]
    if site.position is None:
        acts = torch.stack([a[1:].mean(0) if len(a) > 1 else a[0] for a in acts])
    from repedit.fit.saes import sae_encode

    return sae_encode(sae, acts)


@dataclass(frozen=True)
class SAEFeature:
    latent: int
    score: float          # target mean − control mean (activation), or firing-rate difference
    target: float
    control: float


@dataclass(frozen=True)
class SAEFeatureLocation:
    site: Site
    features: tuple[SAEFeature, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"site": str(self.site), "description": self.description, **self.extra,
                "features": [vars(f) for f in self.features]}


def sae_features(handle, sae, concept_texts: Sequence[str], control_texts: Sequence[str], *,
                 site: Site | None = None, top: int = 10) -> SAEFeatureLocation:
    """Latents most active on `concept_texts` relative to `control_texts` (mean over tokens)."""
    if not concept_texts or not control_texts:
        raise InputError("sae_features() needs non-empty concept and control texts")
    site = site or sae_site(sae, position=None)
    t, c = encode_texts(handle, sae, concept_texts, site), encode_texts(handle, sae, control_texts, site)
    diff = t.mean(0) - c.mean(0)
    idx = diff.topk(min(top, diff.numel())).indices.tolist()
    feats = tuple(SAEFeature(i, float(diff[i]), float(t[:, i].mean()), float(c[:, i].mean())) for i in idx)
    return SAEFeatureLocation(site, feats, description="mean activation: concept − control")


ENTITY_FRAME = "Here is what I know about {entity}"


def known_unknown_latents(handle, sae, known: Sequence[str], unknown: Sequence[str], *, site: Site | None = None,
                          top: int = 10, frame: str = ENTITY_FRAME) -> tuple[SAEFeatureLocation, SAEFeatureLocation]:
    """(known-entity latents, unknown-entity latents) ranked by firing-rate difference at the
    entity's last token; `extra["probe_accuracy"]` is the CV accuracy of a probe on the codes."""
    if len(known) < 5 or len(unknown) < 5:
        raise InputError("known_unknown_latents() needs at least 5 known and 5 unknown entities")
    site = site or sae_site(sae, position=-1)
    k = encode_texts(handle, sae, [frame.format(entity=e) for e in known], site)
    u = encode_texts(handle, sae, [frame.format(entity=e) for e in unknown], site)
    rate_k, rate_u = (k > 0).float().mean(0), (u > 0).float().mean(0)
    diff = rate_k - rate_u
    probe = fit_probe(torch.cat([k, u]), [1] * len(k) + [0] * len(u), folds=5)
    extra = {"probe_accuracy": probe.cv_accuracy, "n_known": len(known), "n_unknown": len(unknown)}

    def pick(sign: float, what: str) -> SAEFeatureLocation:
        idx = (sign * diff).topk(top).indices.tolist()
        feats = tuple(SAEFeature(i, float(sign * diff[i]), float(rate_k[i]), float(rate_u[i])) for i in idx)
        return SAEFeatureLocation(site, feats, description=f"{what}: firing rate known − unknown", extra=extra)

    return pick(1.0, "known-entity latents"), pick(-1.0, "unknown-entity latents")
