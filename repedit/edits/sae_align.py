"""SAE unknown-alignment (Sparse-Autoencoder-Guided Internal Representation Unlearning, 2025).

Forgetting = the target entity's SAE code reads like an unknown entity's. A rank-r delta
W ← W + U Vᵀ on the MLP output matrix (down_proj) of each layer in `layers` is trained through the
frozen model; nothing else trains. Objective (the abstract's, with the choices it leaves open):

    f_t(x)  = SAE encoder code (TopK, as the SAE computes it) of the residual at the SAE's site, at
              the last token of entity x placed in template t (frames ending in the entity — by default
              the target kind's train frames, `repedit.suites.references.frames(kind).train`, disjoint
              from the knownness classifier's — and the target fact's forms cut right after the entity:
              the code the full prompt sees there);
    μU_t, μK_t = mean original code of the unknown / known entities (target excluded) in template t;
    D_t     = ‖μK_t − μU_t‖²  (normalises each template's distances to ≈ 1);
    L_sae   = mean_t [ ‖f_t(T) − μU_t‖² / D_t − β · min(‖f_t(T) − μK_t‖² / D_t, margin) ]
              (the push away from known is a hinge: it stops once the target is `margin` × D_t away
              from the known mean, so it cannot run away);
    L_ret   = mean over retain entities e, their first `retain_frames` templates t of
              ‖f_t(e) − f⁰_t(e)‖² / D_t  (f⁰: the original model's code);
    L_fact  = KL(p⁰ ‖ p) of the next token after retain Facts' `retain_forms` prompts;
    L_lm    = KL(p⁰ ‖ p) of next-token distributions on clean text (mean over tokens; a pool of
              chunks, `lm_batch` per step);
    L       = L_sae + retain_weight · L_ret + fact_weight · L_fact + lm_weight · L_lm.

U starts at zero (the edit starts as the identity); V starts orthonormal, its first column the
target's mean MLP key at that layer. V is kept orthogonal to the top principal directions of the
keys at position 0 (`repedit.edits.lowrank.sink_keys_basis`): at layers 8–11 of SmolLM2-135M
those keys are 20–3000× larger than any other, and an unprotected delta fires on every text's
first token (measured: news perplexity +20 %; +2 % with position 0 skipped). Templates whose
entity opens the text (the bare "{}" frame, the paraphrase form) are not used: the entity would
sit on position 0, whose SAE codes are outliers (‖μK − μU‖² there is hundreds of times larger). Adam on U, V
only; the weights are never written (requires_grad restored, also on errors); see
bench/sae_align_effect.py for measured effects. Returns an `Edit` (method "sae-align").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from repedit.edits.base import Edit, config_record
from repedit.edits.lowrank import TrainableLowRank, sink_keys_basis
from repedit.edits.sae_shared import SharedReferences
from repedit.errors import ConfigError, InputError
from repedit.fit.saes import sae_encode
from repedit.fit.training import training_only
from repedit.forward.capture import capture, select_positions
from repedit.forward.passes import last_token_logits, real_token_logits, residual_after, start_at
from repedit.models.handle import pad_rows
from repedit.models.presets import resolve_config
from repedit.sites import Site
from repedit.suites import Fact, load_text
from repedit.suites.references import frames as kind_frames

FRAMES = kind_frames("country").train       # the country (and generic) frames; each kind has its own
FACT_FORMS = ("qa", "blank", "mc", "adversarial", "paraphrase")
OBJECTIVE = ("L = mean_t[|f_t(T)-muU_t|^2/D_t - beta*min(|f_t(T)-muK_t|^2/D_t, margin)] "
             "+ retain_weight*mean_e,t |f_t(e)-f0_t(e)|^2/D_t + fact_weight*KL(p0||p)[retain facts' next token] "
             "+ lm_weight*KL(p0||p)[clean text]; D_t = |muK_t-muU_t|^2; f = SAE code at the entity's last token; "
             "delta W = U V^T on down_proj, V orthogonal to position-0 keys")


@dataclass(frozen=True)
class SAEAlignConfig:
    """SAE unknown-alignment settings (defaults measured on SmolLM2-135M; see bench/sae_align_effect.py).
    `layers` None = the model's preset (SmolLM2-135M: 8, 12, 13, 14; a model without an SAE has none)."""

    PRESET_SECTION: ClassVar[str] = "sae-align"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layers",)

    layers: tuple[int, ...] | None = None    #: down_proj layers edited (≤ the SAE's layer; SmolLM2: 9–11 hold the sink)
    rank: int = 2                            #: rank r of each delta
    steps: int = 25                          #: Adam steps
    lr: float = 2e-2
    beta: float = 0.5                        #: weight of the push away from the known mean
    margin: float = 1.0                      #: the push stops at this distance (in units of D_t)
    retain_weight: float = 1.0               #: keep retain entities' codes
    fact_weight: float = 1.0                 #: keep retain Facts' next-token distribution after their prompts (KL)
    retain_forms: tuple[str, ...] = ("blank",)  #: forms of retain Facts used for that KL
    lm_weight: float = 1.0                   #: keep next-token distributions on clean text (KL)
    sink_dims: int = 16                      #: V ⟂ top principal directions of position-0 keys (0: off)
    sink_energy: float = 0.999               #: ... up to this share of their second moment
    frames: tuple[str, ...] | None = None    #: templates ending in "{}" (None: the target kind's train frames)

    forms: tuple[str, ...] = FACT_FORMS      #: the target fact's forms also used as templates
    n_reference: int = 24                    #: known / unknown entities whose mean codes are the targets (first n)
    n_retain: int = 16                       #: retain entities used (first n)
    retain_frames: int = 2                   #: templates per retain entity (first n of the list)
    lm_texts: int = 16                       #: clean-text chunks for the KL term (a pool; cycled)
    lm_batch: int = 4                        #: chunks per step
    lm_tokens: int = 64                      #: tokens per chunk
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layers is not None and (not self.layers or list(self.layers) != sorted(set(self.layers))):
            raise ConfigError("SAEAlignConfig.layers must be a non-empty increasing tuple of layer indices")
        if self.frames is not None and (not self.frames or any(not f.rstrip().endswith("{}") or f.count("{}") != 1
                                                               or not f.rstrip()[:-2].strip() for f in self.frames)):
            raise ConfigError("every SAE-align frame must be some text then '{}' (the entity's last token is read; "
                              "an entity at position 0 sits on the attention sink, whose codes are outliers)")
        bad = [f for f in (*self.forms, *self.retain_forms) if f not in FACT_FORMS]
        if bad:
            raise ConfigError(f"unknown forms {bad}; valid: {list(FACT_FORMS)}")
        checks = {"rank >= 1": self.rank >= 1, "steps >= 1": self.steps >= 1, "lr > 0": self.lr > 0,
                  "margin > 0": self.margin > 0, "0 < sink_energy <= 1": 0 < self.sink_energy <= 1,
                  "beta, retain_weight, fact_weight, lm_weight >= 0":
                      min(self.beta, self.retain_weight, self.fact_weight, self.lm_weight) >= 0,
                  "n_reference >= 5": self.n_reference >= 5, "lm_tokens >= 16": self.lm_tokens >= 16,
                  "retain_frames, lm_batch >= 1": min(self.retain_frames, self.lm_batch) >= 1,
                  "n_retain, lm_texts, sink_dims >= 0": min(self.n_retain, self.lm_texts, self.sink_dims) >= 0}
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            raise ConfigError(f"SAEAlignConfig needs {'; '.join(failed)}")


def _templates(handle, fact: Fact | None, cfg: SAEAlignConfig) -> list[tuple[str, bool]]:
    """(template with one '{}' at the entity, chat-rendered?) for the frames and the fact's forms."""
    out = [(f, False) for f in cfg.frames]
    for form in (cfg.forms if fact is not None else ()):
        spec = fact.forms[form]
        text = spec["prompt"]
        chat = bool(spec.get("chat")) and handle.chat_template
        if chat:
            text = handle.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                        add_generation_prompt=True)
        cut = text.rfind(fact.subject)
        if cut < 0:
            raise InputError(f"{fact.id}: form {form!r} does not mention {fact.subject!r}; drop it from forms")
        if not text[:cut].strip():
            continue                  # the entity opens the prompt (paraphrase): position 0, the sink; skipped
        out.append((text[:cut].replace("{", "{{").replace("}", "}}") + "{}", chat))
    return out


def _encode(handle, templates: Sequence[tuple[str, bool]], entities: Sequence[str]) -> dict[str, torch.Tensor]:
    tok = handle.tokenizer
    rows = [tok.encode(t.format(e), add_special_tokens=not chat) for t, chat in templates for e in entities]
    return pad_rows(rows, handle.pad_id, device=handle.input_device)


def _codes(handle, sae, site: Site, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """SAE codes [n, d_sae] at the last real token, forward stopped after the SAE's layer (grad-aware)."""
    h = residual_after(handle, batch["input_ids"], batch["attention_mask"], site.layer)
    return sae_encode(sae, select_positions(h, batch["attention_mask"].to(h.device), -1))


class _CodeRows:
    """The texts template × entity (template-major) whose SAE codes the objective reads every step. On models
    that pack: one packed forward (rows of a template — or, for one entity, of a kind of template — share
    their prefix once; no padding); else right-padded rows (`_encode`)."""

    def __init__(self, handle, templates: Sequence[tuple[str, bool]], entities: Sequence[str]):
        from repedit.forward.packed import PackedFacts, Rows, packable

        tok = handle.tokenizer
        rows = [tok.encode(t.format(e), add_special_tokens=not chat) for t, chat in templates for e in entities]
        members: dict = {}
        for i in range(len(rows)):
            t = templates[i // len(entities)]
            members.setdefault(t if len(entities) > 1 else bool(t[1]), []).append(i)
        groups = [Rows.last_tokens([rows[i] for i in idx], handle.pad_id) for idx in members.values()]
        self.packed = PackedFacts.of(handle, groups) if packable(handle, groups) else None
        order = [i for idx in members.values() for i in idx]          # packed row -> template-major row
        self.back = torch.argsort(torch.tensor(order, device="cpu"))
        self.padded = None if self.packed else _encode(handle, templates, entities)

    def entry(self, handle, layer: int) -> torch.Tensor:
        """The residual after block `layer` of this batch (what `start_at` feeds the next block)."""
        if self.packed is not None:
            return self.packed.residual_after(handle, layer)
        return residual_after(handle, self.padded["input_ids"], self.padded["attention_mask"], layer)

    def codes(self, handle, sae, site: Site) -> torch.Tensor:
        """SAE codes [rows, d_sae] at each text's last token, template-major (grad-aware)."""
        if self.packed is None:
            return _codes(handle, sae, site, self.padded)
        got = sae_encode(sae, self.packed.hidden_after(handle, site.layer))
        return got[self.back.to(got.device)]


def _mean_codes(handle, sae, site: Site, templates: Sequence[tuple[str, bool]], entities: Sequence[str],
                cache: dict | None = None) -> torch.Tensor:
    """Mean code [n_templates, d_sae] of `entities` in each template. Each (template, entity) code is computed
    once per `cache` (`SharedReferences.codes`: one model state, one SAE and site). On models that
    pack, the missing codes come from one packed forward (each template's prefix once, no padding,
    `PackedFacts.hidden_after`); else one padded forward per kind of template (plain frames, chat forms)."""
    from repedit.forward.packed import PackedFacts, Rows, packable

    cache = {} if cache is None else cache
    todo: dict[tuple[str, bool], list[str]] = {}
    for t in templates:
        missing = [e for e in dict.fromkeys(entities) if (t, e) not in cache]
        if missing:
            todo[t] = missing
    tok = handle.tokenizer
    rows = {t: [tok.encode(t[0].format(e), add_special_tokens=not t[1]) for e in es] for t, es in todo.items()}
    groups = [Rows.last_tokens(r, handle.pad_id) for r in rows.values()]
    if groups and packable(handle, groups):
        codes = sae_encode(sae, PackedFacts.of(handle, groups).hidden_after(handle, site.layer))
        cache.update(zip([(t, e) for t, es in todo.items() for e in es], codes))
    else:
        for chat in (False, True):                  # plain frames are not padded to the chat prompts' length
            kind = [t for t in todo if bool(t[1]) == chat]
            if kind:
                batch = pad_rows([r for t in kind for r in rows[t]], handle.pad_id, device=handle.input_device)
                cache.update(zip([(t, e) for t in kind for e in todo[t]], _codes(handle, sae, site, batch)))
    return torch.stack([torch.stack([cache[(t, e)] for e in entities]).mean(0) for t in templates])


def _kl(logp0: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(p0 ‖ p) per row from log-probs [N, vocab] (summed elementwise: a dot product over the vocabulary of
    z and p0 separately would cancel ~20-sized terms down to ~0.01 and lose float32 precision)."""
    return (logp0.exp() * (logp0 - logp)).sum(-1)


def _last_logp(handle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token log-probs [n, vocab] at each row's last real token."""
    return torch.log_softmax(last_token_logits(handle, batch["input_ids"], batch["attention_mask"]).float(), -1)


def _lm_logp(handle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token log-probs [real tokens, vocab] of a clean-text batch (padding is not unembedded)."""
    return torch.log_softmax(real_token_logits(handle, batch["input_ids"], batch["attention_mask"]).float(), -1)


def _lm_pool(handle, texts: Sequence[str] | None, cfg: SAEAlignConfig, first: int) -> tuple[list, list, dict]:
    """The LM term's clean-text batches, their original next-token log-probs at the real tokens [tokens, vocab]
    (float16 keeps them small) and, with `first` > 0, their residual entering block `first`
    (keyed by batch index)."""
    from repedit.fit.saes import text_chunks

    chunks = text_chunks(handle, list(texts) if texts else load_text("wiki", "train")[:20], cfg.lm_tokens)
    if not chunks:
        raise InputError("texts gave no chunk of at least 16 tokens for the LM term")
    pool = [handle.encode(chunks[i: i + cfg.lm_batch], max_length=cfg.lm_tokens)
            for i in range(0, min(cfg.lm_texts, len(chunks)), cfg.lm_batch)]
    ref = [_lm_logp(handle, b).half() for b in pool]
    entry = {i: residual_after(handle, b["input_ids"], b["attention_mask"], first - 1)
             for i, b in enumerate(pool)} if first else {}
    return pool, ref, entry


def sae_align(handle, sae, target: str | Fact, known: Sequence[str], unknown: Sequence[str], *,
              retain: Sequence[str | Fact] = (), texts: Sequence[str] | None = None,
              config: SAEAlignConfig | None = None, kind: str | None = None, progress: bool = False,
              shared: dict[SharedReferences, SharedReferences] | None = None) -> Edit:
    """Train the low-rank deltas of the module docstring; returns the (unapplied) Edit.

    known / unknown: entity names (reference means; unknowns of the target's kind:
    `repedit.suites.references.reference_sets(kind).train`); retain: entities (or their Facts) whose
    codes are kept (default: the known list) — for Facts, also the next-token distribution at the end
    of their `retain_forms` prompts; texts: clean text for the KL term (default wiki.train); kind: the
    target's kind when `config.frames` is None (default: the Fact's `kind`, else "entity", whose
    frames are the generic ones); the resolved frames are recorded in the Edit's config. shared: a dict
    that several targets' calls pass (`repedit.methods` does, for the targets of one build): what only the
    model, the SAE and the config decide — reference codes per (template, entity), the clean-text pool with its
    original distributions, the position-0 key basis — is computed once, in a `SharedReferences` keyed by the
    content of the model's weights and of the SAE (another SAE, or changed weights, share nothing).
    """
    from repedit.forward.text import prompt_ids
    from repedit.locate.sae_features import sae_site

    cfg = config or SAEAlignConfig()
    if not isinstance(cfg, SAEAlignConfig):
        raise ConfigError(f"config must be an SAEAlignConfig, got {type(cfg).__name__}")
    from repedit.fit.saes import check_sae

    check_sae(sae, handle)                                  # trained on this model, at its width
    cfg = resolve_config(cfg, handle)                       # None fields from the model's preset
    fact = target if isinstance(target, Fact) else None
    if cfg.frames is None:                                  # the kind's train frames (never the classifier's)
        cfg = replace(cfg, frames=kind_frames(kind or (fact.kind if fact else "entity")).train)
    name = (fact.subject if fact else str(target)).strip()
    if not name:
        raise InputError("give the target entity's name (e.g. 'France') or its Fact")
    if name in set(unknown):
        raise InputError(f"{name!r} is in the unknown list; the target must be an entity the model knows")
    known = [k for k in dict.fromkeys(known) if k != name][: cfg.n_reference]
    unknown = list(dict.fromkeys(unknown))[: cfg.n_reference]
    if len(known) < 5 or len(unknown) < 5:
        raise InputError("sae_align needs at least 5 known (besides the target) and 5 unknown entities; "
                         "use load_suite('capitals') subjects and repedit.suites.references.reference_sets(kind).train")
    site = handle.check_site(sae_site(sae))
    for layer in cfg.layers:
        handle.check_layer(layer)
        if layer > site.layer:
            raise ConfigError(f"layer {layer} is after the SAE's layer {site.layer}; it cannot change the codes")
    retain = [r for r in (retain or known) if (r.subject if isinstance(r, Fact) else r) != name][: cfg.n_retain]
    ret_names = [r.subject if isinstance(r, Fact) else r for r in retain]
    ret_facts = [r for r in retain if isinstance(r, Fact)]
    t0 = time.perf_counter()
    h, templates = handle, _templates(handle, fact, cfg)
    batches, ref, pool = {}, {}, []
    refs = SharedReferences.within(shared, h, sae, site)
    first = cfg.layers[0] if not h.is_toy else 0     # nothing below the first edited layer trains (below)
    with torch.no_grad():                                   # original codes, distributions and targets
        mu_k, mu_u = (_mean_codes(h, sae, site, templates, known, refs.codes),
                      _mean_codes(h, sae, site, templates, unknown, refs.codes))
        scale = ((mu_k - mu_u) ** 2).sum(-1)                                       # D_t [n_t]
        batches["target"] = _CodeRows(h, templates, [name])
        if ret_names and cfg.retain_weight:
            batches["retain"] = _CodeRows(h, templates[: cfg.retain_frames], ret_names)
            ref["retain"] = batches["retain"].codes(h, sae, site)
            ref["retain_scale"] = scale[: cfg.retain_frames].repeat_interleave(len(ret_names))
        if ret_facts and cfg.retain_forms and cfg.fact_weight:
            batches["facts"] = pad_rows([prompt_ids(h, f.forms[form]["prompt"], f.forms[form]["chat"])
                                         for form in cfg.retain_forms for f in ret_facts], h.pad_id,
                                        device=h.input_device)
            ref["facts"] = _last_logp(h, batches["facts"])
        if cfg.lm_texts and cfg.lm_weight:
            lm_key = (tuple(texts) if texts else None, cfg.lm_tokens, cfg.lm_texts, cfg.lm_batch, first)
            if lm_key not in refs.pools:
                refs.pools[lm_key] = _lm_pool(h, texts, cfg, first)
            pool, ref["lm"], pool_entry = refs.pools[lm_key]
        got = capture(h, [f.format(name) for f in cfg.frames], [Site(l, "mlp_hidden") for l in cfg.layers])
        keys = {s.layer: got[s].float().mean(0) for s in got.acts}    # the target's mean MLP key (V's init)
        # nothing below the first edited layer trains: its input is computed once per batch and reused
        entry = {key: b.entry(h, first - 1) if isinstance(b, _CodeRows) else
                 residual_after(h, b["input_ids"], b["attention_mask"], first - 1)
                 for key, b in batches.items()} | (pool_entry if pool else {}) if first else {}

    def frm(key):
        return start_at(h, first, entry[key]) if first else nullcontext()

    def objective(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with frm("target"):
            f = batches["target"].codes(h, sae, site)
        parts = {"sae": (((f - mu_u) ** 2).sum(-1) / scale).mean(),
                 "push": (((f - mu_k) ** 2).sum(-1) / scale).clamp(max=cfg.margin).mean()}
        loss = parts["sae"] - cfg.beta * parts["push"]
        if "retain" in batches:
            with frm("retain"):
                got = batches["retain"].codes(h, sae, site)
            parts["retain"] = (((got - ref["retain"]) ** 2).sum(-1) / ref["retain_scale"]).mean()
            loss = loss + cfg.retain_weight * parts["retain"]
        if "facts" in batches:
            with frm("facts"):
                parts["facts_kl"] = _kl(ref["facts"], _last_logp(h, batches["facts"])).mean()
            loss = loss + cfg.fact_weight * parts["facts_kl"]
        if pool:
            b = pool[step % len(pool)]
            with frm(step % len(pool)):
                parts["lm_kl"] = _kl(ref["lm"][step % len(pool)].float(), _lm_logp(h, b)).mean()  # real tokens
            loss = loss + cfg.lm_weight * parts["lm_kl"]
        return loss, parts

    sink_key = (cfg.layers, cfg.sink_energy, cfg.sink_dims, cfg.seed)
    if cfg.sink_dims and sink_key not in refs.sinks:
        refs.sinks[sink_key] = sink_keys_basis(h, cfg.layers, cfg.sink_energy, cfg.sink_dims, seed=cfg.seed)
    protect = refs.sinks[sink_key] if cfg.sink_dims else {}
    trainable = TrainableLowRank(h, cfg.layers, cfg.rank, keys, protect, cfg.seed)
    opt = torch.optim.Adam(trainable.u + trainable.v, lr=cfg.lr)
    log: list[dict[str, float]] = []
    with training_only(h, ()), torch.enable_grad(), trainable:      # every weight frozen, flags restored
        bar = tqdm(range(cfg.steps + 1), disable=not progress, desc=f"sae-align {name}")
        for step in bar:                                     # the last pass only measures (no graph)
            with torch.set_grad_enabled(step < cfg.steps):
                loss, parts = objective(step)
            log.append({k: float(v.detach()) for k, v in parts.items()} | {"loss": float(loss.detach())})
            bar.set_postfix({k: round(v, 3) for k, v in log[-1].items()})
            if step == cfg.steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    deltas = trainable.deltas()
    if not all(torch.isfinite(t).all() for d in deltas for t in (d.u, d.v)):
        raise InputError("training diverged (non-finite factors); lower lr or steps")
    cfg_dict = config_record(cfg)
    return Edit(method="sae-align", deltas=deltas, model_id=h.id, config=cfg_dict,
                target={"entity": name, "fact": fact.id if fact else None, "sae_site": str(site),
                        "n_known": len(known), "n_unknown": len(unknown), "retain": ret_names},
                stats={"objective": OBJECTIVE, "steps": cfg.steps, "templates": len(templates),
                       "initial": log[0], "final": log[-1], "seconds": round(time.perf_counter() - t0, 2)})
