"""SAE unknown-alignment on the real default model with the shipped SAE: guarantees, not shapes."""

from pathlib import Path

import pytest
import torch

from repedit.edits import EditStack, applied
from repedit.edits.hooks import hooked
from repedit.edits.sae_align import FRAMES, SAEAlignConfig, sae_align
from repedit.errors import ConfigError, InputError
from repedit.fit.saes import load_sae
from repedit.forward.answer_scores import answer_logprobs
from repedit.locate.sae_features import encode_texts, sae_site
from repedit.models.presets import resolve_config
from repedit.suites import load_suite, unknown_entities
from repedit.verify.sae_codes import fit_knownness
from roundtrip import assert_export_roundtrip

SAE_DIR = Path(__file__).resolve().parents[1] / "saes" / "smollm2-135m-L15-topk"
TARGET = "France"
# capitals SmolLM2-135M answers correctly (greedy, fill-in-the-blank; `known_facts`), fixed to keep the test fast
KNOWN = ("Japan", "Germany", "Italy", "Russia", "China", "Mexico", "Spain", "Canada", "Indonesia", "Pakistan",
         "Thailand", "United Kingdom", "South Korea", "Kenya", "Uganda", "Sudan", "Malaysia", "Chile", "Cuba", "Greece")
FAST = SAEAlignConfig(steps=15, lr=3e-2, frames=FRAMES[:4], forms=("blank", "qa", "adversarial"), n_reference=12,
                      n_retain=8, lm_texts=4, lm_batch=1)          # ~40 s of training on one CPU core
LAYERS = resolve_config(FAST, "smollm2-135m").layers    # edited layers: the preset's (8, 12, 13, 14)
FORMS = ("qa", "blank", "paraphrase", "adversarial")
TEXTS = ["The capital of France is", "Paris is a city in", "The chemical symbol of gold is"]


def _weights(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _logits(h):
    batch = h.encode(TEXTS)
    return h.logits(batch["input_ids"], batch["attention_mask"])


@pytest.fixture(scope="module")
def made(smol):
    sae = load_sae(SAE_DIR)
    by = {f.subject: f for f in load_suite("capitals")}
    others = [by[s] for s in KNOWN]
    unknown = unknown_entities()
    grads = {n: p.requires_grad for n, p in smol.model.named_parameters()}
    w0 = _weights(smol)
    edit = sae_align(smol, sae, by[TARGET], [f.subject for f in others], unknown[:20], retain=others[8:],
                     config=FAST)
    untouched = _same(_weights(smol), w0) and grads == {n: p.requires_grad for n, p in smol.model.named_parameters()}
    # classifier: frames the edit never trained on, unknown entities it never saw
    clf = fit_knownness(smol, sae, [f.subject for f in others], unknown[20:])
    return {"sae": sae, "edit": edit, "target": by[TARGET], "neighbours": others[:8], "clf": clf,
            "untouched": untouched, "w0": w0}


def test_target_reads_unknown_and_loses_recall_neighbours_kept(smol, made):
    sae, clf, edit, target, neigh = made["sae"], made["clf"], made["edit"], made["target"], made["neighbours"]
    assert clf.cv_accuracy > 0.9
    site = sae_site(sae)
    frames = [f.format(e) for f in clf.frames for e in [TARGET] + [n.subject for n in neigh]]
    p0, a0, n0 = clf.p_known(smol, sae, [TARGET])[0], answer_logprobs(smol, [target], FORMS).exp()[0], \
        answer_logprobs(smol, neigh, FORMS).exp()
    c0 = encode_texts(smol, sae, frames, site)
    with applied(smol, edit):
        p1, a1, n1 = clf.p_known(smol, sae, [TARGET])[0], answer_logprobs(smol, [target], FORMS).exp()[0], \
            answer_logprobs(smol, neigh, FORMS).exp()
        np1 = clf.p_known(smol, sae, [n.subject for n in neigh])
        c1 = encode_texts(smol, sae, frames, site)
    assert p0 > 0.9 and p1 < 0.5, (p0, p1)
    assert a1 < 0.5 * a0, (a0, a1)                                    # the target's answer mostly gone
    assert n1.mean() > 0.85 * n0.mean() and (np1 > 0.5).all(), (n0, n1, np1)
    change = 1 - torch.nn.functional.cosine_similarity(c0, c1).view(len(clf.frames), -1).mean(0)
    assert change[0] > 0.5 and change[0] > 3 * change[1:].mean(), change   # the target's codes moved, others' much less


def test_training_writes_no_weight_and_the_edit_is_what_it_claims(smol, made):
    edit = made["edit"]
    assert made["untouched"] and _same(_weights(smol), made["w0"])
    assert edit.method == "sae-align" and edit.params == [f"model.layers.{l}.mlp.down_proj.weight" for l in LAYERS]
    assert edit.config["rank"] == FAST.rank and edit.config["steps"] == FAST.steps
    st = edit.stats
    assert st["steps"] == FAST.steps and "objective" in st and st["seconds"] > 0
    assert st["final"]["sae"] < st["initial"]["sae"] and set(st["final"]) >= {"sae", "push", "retain", "lm_kl"}
    before = {n: p.detach().double().clone() for n, p in smol.model.named_parameters() if n in edit.params}
    with applied(smol, edit):
        after = {n: p.detach().double().clone() for n, p in smol.model.named_parameters() if n in edit.params}
    for d in edit.deltas:
        assert int(torch.linalg.matrix_rank(after[d.param] - before[d.param], rtol=1e-6)) == d.rank == FAST.rank


def test_push_export_revert_bit_exact_and_merged_equals_hooked(smol, made, tmp_path):
    edit, w0 = made["edit"], made["w0"]
    l0 = _logits(smol)
    stack = EditStack(smol)
    stack.push(edit)
    merged = _logits(smol)
    assert (merged - l0).abs().max() > 1e-3
    (again,) = assert_export_roundtrip(smol, stack, tmp_path / "out", TEXTS, w0)   # reloads in plain transformers
    assert again.config["layers"] == list(LAYERS)
    stack.pop()
    assert _same(_weights(smol), w0) and torch.equal(_logits(smol), l0)
    with hooked(smol, edit):
        hook = _logits(smol)
    torch.testing.assert_close(hook, merged, atol=2e-4, rtol=1e-4)
    assert _same(_weights(smol), w0)


class _FailingSAE:
    """Wraps the SAE; encode raises inside the training loop (the first input that carries gradients)."""

    def __init__(self, sae):
        self.sae, self.cfg, self.failed = sae, sae.cfg, False

    def encode(self, x):
        if x.requires_grad:
            self.failed = True
            raise RuntimeError("boom")
        return self.sae.encode(x)

    def __getattr__(self, name):                 # everything else (W_dec, to, ...) is the wrapped SAE's
        return getattr(self.sae, name)


def test_invalid_or_failed_calls_raise_and_leave_the_model_as_it_was(smol, made):
    sae, target = made["sae"], made["target"]
    known, unknown = list(KNOWN), unknown_entities()[:20]
    grads = {n: p.requires_grad for n, p in smol.model.named_parameters()}
    w0 = made["w0"]
    with pytest.raises(InputError, match="unknown list"):
        sae_align(smol, sae, unknown[0], known, unknown, config=FAST)
    with pytest.raises(InputError, match="entity"):
        sae_align(smol, sae, "  ", known, unknown, config=FAST)
    with pytest.raises(InputError, match="at least 5 known"):
        sae_align(smol, sae, target, known[:3], unknown, config=FAST)
    with pytest.raises(ConfigError, match="after the SAE"):
        sae_align(smol, sae, target, known, unknown, config=SAEAlignConfig(layers=(14, 20)))
    for bad in ({"rank": 0}, {"layers": (14, 12)}, {"frames": ("{} is",)}, {"frames": ("{}",)}, {"forms": ("haiku",)},
                {"beta": -1.0}, {"lm_tokens": 4}):
        with pytest.raises(ConfigError):
            SAEAlignConfig(**bad)
    failing = _FailingSAE(sae)
    with pytest.raises(RuntimeError, match="boom"):
        sae_align(smol, failing, target, known, unknown, retain=known[8:], config=FAST)
    assert failing.failed
    assert _same(_weights(smol), w0) and grads == {n: p.requires_grad for n, p in smol.model.named_parameters()}
    downs = [smol.model.get_submodule(f"model.layers.{l}.mlp.down_proj") for l in LAYERS]
    assert not any(m._forward_hooks for m in downs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_reference_codes_packed_equal_padded_rows_and_each_is_computed_once(model_in, dtype):
    """SAE-align's reference means: every (template, entity) row packed into one forward (each template's
    prefix once) gives the codes of each row run alone; with a cache shared by the targets of one build, a
    later target runs only the rows no earlier one ran (none when all are known)."""
    from dataclasses import replace

    from repedit.edits.sae_align import _codes, _encode, _mean_codes, _templates
    from repedit.forward.packed import Rows, packable

    h = model_in(dtype)
    sae = load_sae(SAE_DIR)
    site = h.check_site(sae_site(sae))
    fact = {f.subject: f for f in load_suite("capitals")}[TARGET]
    templates = _templates(h, fact, resolve_config(replace(FAST, frames=FRAMES[:3]), h))
    assert any(chat for _, chat in templates) and not all(chat for _, chat in templates)
    assert packable(h, [Rows.last_tokens([[1, 2, 3]], h.pad_id)])
    tokens = []
    counter = h.model.get_input_embeddings().register_forward_pre_hook(lambda _m, a: tokens.append(a[0].numel()))
    with torch.no_grad():
        try:
            cache: dict = {}
            packed = _mean_codes(h, sae, site, templates, list(KNOWN[:6]), cache)
            first = list(tokens)
            tokens.clear()
            later = _mean_codes(h, sae, site, templates, list(KNOWN[1:6]) + ["Peru"], cache)
            second = list(tokens)
            tokens.clear()
            assert torch.equal(_mean_codes(h, sae, site, templates, list(KNOWN[:6]), cache), packed) and not tokens
        finally:
            counter.remove()
    with torch.no_grad():
        ref = {e: torch.stack([_codes(h, sae, site, _encode(h, [t], [e]))[0] for t in templates])
               for e in list(KNOWN[:6]) + ["Peru"]}
    padded = sum(int(_encode(h, [t], list(KNOWN[:6]))["attention_mask"].sum()) for t in templates)
    assert len(first) == 1 and first[0] < padded / 2           # one forward, prefixes once: under half the tokens
    peru = sum(int(_encode(h, [t], ["Peru"])["attention_mask"].sum()) for t in templates)
    assert second == [peru]                                    # only Peru's rows ran again (one per template)
    tol = {torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    for got, names in ((packed, KNOWN[:6]), (later, list(KNOWN[1:6]) + ["Peru"])):
        want = torch.stack([ref[e] for e in names]).mean(0)
        assert float((got - want).abs().max()) <= tol * float(want.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_knownness_features_packed_equal_captured(model_in, dtype):
    """The knownness probe reads every frame × entity text from one packed forward per call: the residual
    (no SAE) and the SAE codes equal what `capture` reads from right-padded batches."""
    from repedit.forward.packed import Rows, packable
    from repedit.sites import Site
    from repedit.verify.sae_codes import EVAL_FRAMES, entity_features, frame_features

    h, sae = model_in(dtype), load_sae(SAE_DIR)
    assert packable(h, [Rows.last_tokens([[1, 2, 3]], h.pad_id)])          # the packed path runs
    entities = list(KNOWN[:5]) + ["Zorbania", "United States of America"]
    texts = [f.format(e) for f in EVAL_FRAMES for e in entities]
    tol = {torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    for model_sae, site in ((None, Site(15, "resid_post")), (sae, sae_site(sae))):
        got = frame_features(h, model_sae, EVAL_FRAMES, entities, site)
        want = entity_features(h, model_sae, texts, site)
        assert got.shape == want.shape == (len(texts), want.shape[1])
        assert float((got.float() - want.float()).abs().max()) <= tol * float(want.float().abs().max())


def test_shared_references_are_keyed_by_content_never_by_identity(smol):
    """What the targets of one build share (`SharedReferences`) is keyed by the content of the SAE and of the
    model's weights: a reloaded copy of the same SAE shares the reference codes (they run once, and the edit is
    the one an unshared call builds); changed model weights, or the same SAE object after a write to its
    weights, share nothing (its codes are its own, as a fresh computation gives them)."""
    from repedit.edits.sae_align import _mean_codes, _templates
    from repedit.edits.sae_shared import SharedReferences
    from repedit.forward.weights import holding

    sae, copy = load_sae(SAE_DIR), load_sae(SAE_DIR)
    site = smol.check_site(sae_site(sae))
    key = SharedReferences.of(smol, sae, site)
    assert SharedReferences.of(smol, copy, site) == key and hash(SharedReferences.of(smol, copy, site)) == hash(key)
    name = "model.layers.3.mlp.down_proj.weight"
    with holding(smol, {name: dict(smol.model.named_parameters())[name] + 1e-3}):
        assert SharedReferences.of(smol, sae, site) != key                # other weights below the SAE's layer
    assert SharedReferences.of(smol, sae, site) == key                    # the bytes back: the same key

    cfg = SAEAlignConfig(layers=(14,), steps=1, frames=FRAMES[:1], forms=(), n_reference=5, n_retain=0,
                         lm_texts=0, sink_dims=0)
    known, unknown = list(KNOWN[:5]), unknown_entities()[:5]
    shared: dict = {}
    first = sae_align(smol, sae, TARGET, known, unknown, config=cfg, shared=shared)
    (refs,) = shared
    codes = dict(refs.codes)
    assert len(codes) == len(known) + len(unknown)                       # one template × ten entities
    again = sae_align(smol, copy, TARGET, known, unknown, config=cfg, shared=shared)
    assert list(shared) == [refs] and refs.codes.keys() == codes.keys()
    assert all(refs.codes[k] is v for k, v in codes.items())              # nothing recomputed
    alone = sae_align(smol, copy, TARGET, known, unknown, config=cfg)   # no sharing: the same edit
    for e in (again, alone):
        assert all(torch.equal(a.u, b.u) and torch.equal(a.v, b.v) for a, b in zip(first.deltas, e.deltas))
    with torch.no_grad():
        copy.b_enc += 1.0                                                 # the same object, other weights
    sae_align(smol, copy, TARGET, known, unknown, config=cfg, shared=shared)
    assert len(shared) == 2
    new = next(r for r in shared if r is not refs)
    assert new.sae != refs.sae and new.weights == refs.weights and new.codes.keys() == codes.keys()
    assert not any(torch.equal(new.codes[k], v) for k, v in codes.items())
    fresh: dict = {}
    with torch.no_grad():                                                 # as sae_align runs them: known, unknown
        for names in (known, unknown):
            _mean_codes(smol, copy, site, _templates(smol, None, cfg), names, fresh)
    assert fresh.keys() == new.codes.keys() and all(torch.equal(fresh[k], new.codes[k]) for k in fresh)
