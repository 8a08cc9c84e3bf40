"""Does the model's SAE code (or its residual stream) call an entity known? And what did an edit
do to recall and fluency?

`fit_knownness` fits a logistic probe (`repedit.locate.probe_directions.fit_probe`) on SAE codes (or, without
an SAE, on the residual at a site) of known vs unknown entities at the entity's last token, in
`EVAL_FRAMES` by default (the country frames; `repedit.suites.references.frames(kind).measure` for
another kind: none of them is a training frame of `repedit.edits.sae_align`, so the classifier reads
templates the edit never saw);
`P(known)` of an entity is the probe's probability averaged over those frames.
`sae_align_effect` measures P(known), recall (five forms), neighbours, unrelated facts and
perplexity before an edit and with it applied (reverted after), and the cosine between each
entity's codes before and after (target vs neighbours, in the classifier's frames).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from repedit.errors import InputError
from repedit.forward.capture import capture
from repedit.locate.probe_directions import ProbeDirection, fit_probe
from repedit.locate.sae_features import encode_texts, sae_site
from repedit.sites import Site
from repedit.suites import FORMS, Fact
from repedit.suites.references import frames as kind_frames
from repedit.verify.perplexity import perplexity
from repedit.verify.recall import recall

EVAL_FRAMES = kind_frames("country").measure   # (ENTITY_FRAME, "A short history of {}", travel guide, government)


def entity_features(handle, sae, texts: Sequence[str], site: Site) -> torch.Tensor:
    """[n, d] features at the entity's last token: the SAE's codes (`sae`), or the residual at `site` (None)."""
    if sae is not None:
        return encode_texts(handle, sae, texts, site)
    return capture(handle, list(texts), [site], batch_size=32, progress=False)[site].float()


def frame_features(handle, sae, frames: Sequence[str], entities: Sequence[str], site: Site) -> torch.Tensor:
    """`entity_features` of every frame filled with every entity, frame-major: [frames × entities, d]. For the
    residual after a block at the last token (the knownness probe's site), on models that pack, each frame's
    texts run in one packed forward (the frame's prefix once, no padding; `PackedFacts.hidden_after`)."""
    from repedit.forward.packed import PackedFacts, Rows, packable
    from repedit.sites import Point

    if site.position == -1 and site.point == Point.RESID_POST:
        tok = handle.tokenizer                           # the tokens `capture` runs (handle.encode, ≤ 256)
        groups = [Rows.last_tokens([tok.encode(f.format(e), add_special_tokens=True)[-256:] for e in entities],
                                   handle.pad_id) for f in frames]
        if packable(handle, groups):
            from repedit.fit.saes import sae_encode

            with torch.no_grad():
                h = PackedFacts.of(handle, groups).hidden_after(handle, site.layer)
                return h.float() if sae is None else sae_encode(sae, h)
    return entity_features(handle, sae, [f.format(e) for f in frames for e in entities], site)


@dataclass(frozen=True)
class KnownnessClassifier:
    """Logistic probe on SAE codes, or on the residual when fitted without an SAE (label 1 = known);
    `p_known` averages over `frames`."""

    probe: ProbeDirection
    frames: tuple[str, ...]
    cv_accuracy: float

    def p_known(self, handle, sae, entities: Sequence[str]) -> torch.Tensor:
        """P(known) [n_entities], mean over the classifier's frames (`sae`: the one it was fitted with, or None)."""
        if not entities:
            raise InputError("p_known() needs at least one entity")
        feats = frame_features(handle, sae, self.frames, entities, self.probe.site)
        return torch.sigmoid(self.probe(feats)).view(len(self.frames), len(entities)).mean(0)


def fit_knownness(handle, sae, known: Sequence[str], unknown: Sequence[str],
                  frames: Sequence[str] = EVAL_FRAMES, site: Site | None = None) -> KnownnessClassifier:
    """Fit the known-vs-unknown classifier on SAE codes (`sae`), or on the residual at `site` when `sae`
    is None (5-fold CV accuracy by entity recorded)."""
    if len(known) < 5 or len(unknown) < 5:
        raise InputError("fit_knownness() needs at least 5 known and 5 unknown entities")
    if not frames or any(f.count("{}") != 1 for f in frames):
        raise InputError("each classifier frame needs one '{}' where the entity goes, e.g. 'The history of {}'")
    if sae is None and site is None:
        raise InputError("fit_knownness() without an SAE needs the residual site, e.g. Site(15, 'resid_post')")
    site = sae_site(sae) if sae is not None else site
    k, u = frame_features(handle, sae, frames, known, site), frame_features(handle, sae, frames, unknown, site)
    # 5 folds by entity: no entity is in a fold's training and test rows at once
    groups = [i % 5 for _ in frames for i in range(len(known))] + [i % 5 for _ in frames for i in range(len(unknown))]
    probe = fit_probe(torch.cat([k, u]), [1] * len(k) + [0] * len(u), groups=groups, site=site)
    return KnownnessClassifier(probe=probe, frames=tuple(frames), cv_accuracy=probe.cv_accuracy)


@dataclass(frozen=True)
class SAEAlignEffect:
    """Before / after numbers of one edit (dicts of the same keys)."""

    target: str
    before: dict
    after: dict
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure(handle, sae, clf: KnownnessClassifier, target: Fact, neighbours: Sequence[Fact] = (),
            unrelated: Sequence[Fact] = (), texts: Sequence[str] = (), neighbour_forms=("blank", "qa")) -> dict:
    """P(known) of the target and neighbours, recall of target (five forms), neighbours, unrelated, perplexity."""
    out = {"p_known": float(clf.p_known(handle, sae, [target.subject])[0]),
           "target": recall(handle, [target], FORMS, progress=False).summary()}
    if neighbours:
        out["neighbours"] = recall(handle, neighbours, neighbour_forms, progress=False).summary()
        out["neighbours_p_known"] = float(clf.p_known(handle, sae, [f.subject for f in neighbours]).mean())
    if unrelated:
        out["unrelated"] = recall(handle, unrelated, neighbour_forms, progress=False).summary()
    if texts:
        out["perplexity"] = perplexity(handle, list(texts))
    return out


def sae_align_effect(handle, sae, edit, clf: KnownnessClassifier, target: Fact, neighbours: Sequence[Fact] = (),
                     unrelated: Sequence[Fact] = (), texts: Sequence[str] = (),
                     before: dict | None = None) -> SAEAlignEffect:
    """Measure without and with `edit` (applied on an EditStack, reverted after); `before` reuses a measurement."""
    from repedit.edits.stack import applied

    t0 = time.perf_counter()
    entities = [target.subject] + [f.subject for f in neighbours]
    texts_c = [f.format(e) for f in clf.frames for e in entities]
    c0 = encode_texts(handle, sae, texts_c, sae_site(sae))
    before = before or measure(handle, sae, clf, target, neighbours, unrelated, texts)
    with applied(handle, edit):
        after = measure(handle, sae, clf, target, neighbours, unrelated, texts)
        c1 = encode_texts(handle, sae, texts_c, sae_site(sae))
    cos = torch.nn.functional.cosine_similarity(c0, c1).view(len(clf.frames), len(entities)).mean(0)
    after["codes_cosine"] = {"target": float(cos[0]), "neighbours": float(cos[1:].mean()) if neighbours else None}
    return SAEAlignEffect(target=target.subject, before=before, after=after, seconds=round(time.perf_counter() - t0, 2))
