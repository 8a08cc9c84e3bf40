"""A recipe's typed sections (frozen dataclasses) and the tables, keys and values they allow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from repedit.errors import ReprEditError


class RecipeError(ReprEditError, ValueError):
    """A recipe cannot be run as written (the message names the line and the fix)."""


@dataclass(frozen=True)
class Targets:
    """What to forget (facts by subject from a suite, a file or inline tables) and what to keep; or a
    memorised pool (by name, path or inline keys)."""

    suite: str = "capitals"                  #: built-in suite (probes/facts/<name>.jsonl) or a .jsonl/.csv path
    forget: tuple[str, ...] = ()             #: subjects to forget
    retain: int | tuple[str, ...] = 10       #: retain facts: a count (known facts of the suite) or subjects
    neighbours: int = 12                     #: held-out facts of the same suite, never trained on
    unrelated_suite: str = "elements"        #: a different suite (name or path), for unrelated facts
    unrelated: int = 20
    known_only: bool = True                  #: keep only facts the model answers (greedy, blank form)
    pool: str | None = None                  #: memorised pool (probes/memorised/<name>.jsonl or a path)
    contexts: int = 8                        #: pool contexts per key
    facts: tuple[dict, ...] = ()             #: inline facts ([[targets.facts]], minimal records), instead of suite
    templates: dict = field(default_factory=dict)   #: relation -> {qa, blank, paraphrase, shot} templates
    pool_keys: tuple[dict, ...] = ()         #: inline pool ([[targets.pool_keys]]), instead of pool
    #: unknown reference entities of the targets' kind for the knownness probe and SAE-align;
    #: default: invented ones of that kind (if given: at least 10 distinct names)
    references: tuple[str, ...] = ()
    #: a standard benchmark as the targets ([targets.benchmark]: format, path, split, limit, reference,
    #: max_new_tokens); its forget split is forgotten (or the subjects in `forget`), its own metrics reported
    benchmark: dict = field(default_factory=dict)

    @property
    def has_pool(self) -> bool:
        return bool(self.pool or self.pool_keys)


@dataclass(frozen=True)
class EditSpec:
    method: str
    name: str                                #: label in reports (default: the method)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verify:
    forms: tuple[str, ...] = ("qa", "blank", "mc", "adversarial", "paraphrase")
    perplexity_docs: int = 20                #: held-out news documents
    signature_depths: tuple[int, ...] = ()   #: LOO probe depths (pool targets)
    knownness: bool = True                   #: known-vs-unknown residual probe on the forget subjects (facts)
    knownness_layer: int = -1                #: its residual layer (resid_post); -1 = the model's preset
    lm_eval_tasks: tuple[str, ...] = ()      #: lm-eval tasks scored before and after each edit (repedit[eval])
    lm_eval_include: str | None = None       #: folder of lm-eval task YAMLs (relative: from the recipe's folder)
    lm_eval_limit: int = 0                   #: items per lm-eval task (0 = all)


@dataclass(frozen=True)
class Attacks:
    prefixes: bool = True                    #: adversarial prefixes and in-context hints
    relearn_steps: int = 0                   #: 0 = off; fine-tune steps on half the forget facts
    relearn_lr: float = 1e-5
    relearn_every: int = 5
    trace_prompts: int = 0                   #: 0 = off; forget-irrelevant prompts for trace detection
    sae: str | None = None                   #: SAE directory for SAE restoration (None = off)
    probes: bool = False                     #: six probe variants + re-fit attacker (pool targets)
    quantisation: tuple[str, ...] = ()       #: schemes: int8, int4-g<G>, gguf-q8_0/q4_0/q4_1/q5_0/q5_1 (facts)
    weight_diff: bool = False                #: read the edit out of edited − base weights (facts)
    weight_diff_k: int = 8                   #: singular directions per weight the attacker reads
    extraction: bool = False                 #: logit lens + tuned read-out at every layer (facts)
    membership: bool = False                 #: loss / zlib / min-k / min-k++ AUC, forget vs retain (facts)
    remind: bool = False                     #: REMIND input-loss landscape, forget vs retain (facts)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    seed: int
    targets: Targets
    edits: tuple[EditSpec, ...]
    verify: Verify
    attacks: Attacks
    export: str | None                       #: edit name whose edited model is exported (None = no export)
    source: str = ""                         #: where the recipe came from
    dtype: str = "float32"                   #: [model] dtype: float32 | bfloat16 | float16
    device_map: str | None = None            #: [model] device_map for accelerate ("auto", "balanced", ...)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DTYPES = ("float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")
SECTIONS = {"run": {"name", "seed"}, "model": {"id", "dtype", "device_map"},
            "targets": {f.name for f in dataclasses.fields(Targets)},
            "edit": {"method", "name", "config"}, "verify": {f.name for f in dataclasses.fields(Verify)},
            "attacks": {f.name for f in dataclasses.fields(Attacks)}, "export": {"edit"}}
FACT_ATTACKS = ("quantisation", "weight_diff", "extraction", "membership", "remind")
MIN_REFERENCES = 10
BENCHMARK_KEYS = ("format", "path", "split", "limit", "reference", "max_new_tokens")
