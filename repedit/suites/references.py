"""Unknown references of the right kind: invented names and frames per kind of entity.

SAE-align pulls a target's SAE code towards the mean code of *unknown* entities, and the knownness
probe that grades it is fitted on known vs unknown entities. Both need unknowns of the target's kind
(an invented person for a person, not an invented country) read in frames that fit the kind ("A
biography of {}", not "The government of {}"), and the two must not share data: the probe would
otherwise be graded on the references the edit was trained towards.

- `KINDS`: the kinds with their own names and frames; `canonical_kind` maps related kinds onto them
  (`RELATED`: state, city, landmark → place; book, film, play → work; company, institution →
  organisation; any other kind → "entity", the generic fallback).
- `invented(kind, n, seed)`: reproducible invented names, generated offline from syllable and word
  tables, distinct, never a subject of a built-in suite (probes/facts; suites of invented entities
  excluded). Countries reuse the style of `repedit.suites.build.made_up_countries`: seed 0 is its
  sequence (seed 7), so the first 40 are the shipped unknown-entities suite (without "the Republic of").
- `frames(kind)`: `KindFrames(train, measure)`, disjoint; train = SAE-align's frames, measure = the
  knownness classifier's. Country frames are the historical ones (`repedit.edits.sae_align.FRAMES`,
  `repedit.verify.sae_codes.EVAL_FRAMES` are defined from them). Every frame is some text then "{}":
  an entity at position 0 sits on the attention sink, whose codes are outliers.
- `references(kind, n_train, n_measure, seed, given)`: a disjoint, deterministic split. Invented
  names: train = the first `n_train` of the first `TRAIN_POOL` names, measure = the `n_measure` names
  after them, so neither set depends on the other's size (callers asking different sizes still never
  overlap). User-given names (≥ `MIN_GIVEN`): train = the first half (rounded up), measure = the rest.
- `reference_sets(kind, given, n_train, n_measure)`: the one choice a recipe makes (SAE-align's
  train set and the knownness probe's measure set come from it; see repedit.recipes).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from repedit.errors import InputError

KINDS = ("country", "person", "work", "place", "organisation", "element", "entity")
#: related kinds → the kind whose names and frames they use (anything else → "entity")
RELATED = {
    "state": "place", "city": "place", "town": "place", "region": "place", "landmark": "place", "river": "place",
    "mountain": "place", "book": "work", "film": "work", "movie": "work", "play": "work", "novel": "work",
    "song": "work", "album": "work", "painting": "work", "company": "organisation", "institution": "organisation",
    "organization": "organisation", "university": "organisation", "team": "organisation", "band": "organisation",
    "people": "person", "author": "person", "artist": "person", "scientist": "person", "nation": "country",
    "chemical": "element",
}
TRAIN_POOL = 64        #: invented train names come from the first TRAIN_POOL, measure names from the ones after
N_TRAIN = 24           #: default train references (SAEAlignConfig.n_reference)
N_MEASURE = 40         #: default measure references (the knownness probe's negatives)
MIN_GIVEN = 10         #: user-given references needed (half train, half measure, ≥ 5 each)


@dataclass(frozen=True)
class KindFrames:
    """Templates ending in "{}" for one kind: `train` (SAE-align's) and `measure` (the knownness classifier's)."""

    train: tuple[str, ...]
    measure: tuple[str, ...]


@dataclass(frozen=True)
class References:
    """Unknown reference names, split: `train` (an edit's targets) and `measure` (a classifier's negatives)."""

    train: tuple[str, ...]
    measure: tuple[str, ...]
    kind: str = "entity"            #: the canonical kind the names and frames are of
    source: str = "invented"        #: "invented" or "given"


_GENERIC_TRAIN = ("Tell me about {}", "Let me tell you about {}", "Write something about {}",
                  "Please answer the question about {}", "Some facts about {}", "An article about {}",
                  "We talked about {}", "Everyone knows about {}")
_FRAMES = {
    "country": KindFrames(_GENERIC_TRAIN, ("Here is what I know about {}", "A short history of {}",
                                           "I am writing a travel guide to {}", "The government of {}")),
    "entity": KindFrames(_GENERIC_TRAIN, ("Here is what I know about {}", "A short history of {}",
                                          "Some background on {}", "An overview of {}")),
    "person": KindFrames(
        ("Tell me about the life of {}", "A biography of {}", "Let me tell you about {}", "Write something about {}",
         "An interview with {}", "The early years of {}", "We talked about {}", "Some facts about {}"),
        ("Here is what I know about {}", "The life and work of {}", "A portrait of {}", "The career of {}")),
    "work": KindFrames(
        ("A review of {}", "Tell me about the plot of {}", "I just finished {}", "Let me tell you about {}",
         "Write something about {}", "The main character of {}", "Critics praised {}", "Some facts about {}"),
        ("Here is what I know about {}", "A summary of {}", "The ending of {}", "The themes of {}")),
    "place": KindFrames(
        ("Tell me about {}", "Let me tell you about {}", "Write something about {}", "Things to see in {}",
         "The streets of {}", "We drove to {}", "The weather in {}", "Some facts about {}"),
        ("Here is what I know about {}", "A short history of {}", "I am writing a travel guide to {}",
         "The people who live in {}")),
    "organisation": KindFrames(
        ("Tell me about {}", "Let me tell you about {}", "Write something about {}", "The founder of {}",
         "The headquarters of {}", "I applied for a job at {}", "An article about {}", "Some facts about {}"),
        ("Here is what I know about {}", "A short history of {}", "The employees of {}", "The annual report of {}")),
    "element": KindFrames(
        ("Tell me about {}", "Let me tell you about {}", "Write something about {}", "The chemical element {}",
         "The properties of {}", "We studied {}", "An article about {}", "Some facts about {}"),
        ("Here is what I know about {}", "The discovery of {}", "The atomic weight of {}", "A compound of {}")),
}


def canonical_kind(kind: str | None) -> str:
    """The kind in `KINDS` whose names and frames `kind` uses (related kinds mapped; unknown → "entity")."""
    k = (kind or "entity").strip().lower()
    return k if k in KINDS else RELATED.get(k, "entity")


def frames(kind: str) -> KindFrames:
    """Train (SAE-align) and measure (knownness classifier) frames of `kind` (after `canonical_kind`)."""
    return _FRAMES[canonical_kind(kind)]


# ---- invented names ------------------------------------------------------------------------------------------

# countries: the tables and draw order of repedit.suites.build.made_up_countries (seed 0 ≡ its seed 7)
_C_ON = ["Vel", "Dra", "Qua", "Zor", "Myr", "Tal", "Bren", "Ost", "Kav", "Lun", "Phe", "Sar"]
_C_MID = ["o", "a", "e", "i", "u", "ae", "ou"]
_C_END = ["ria", "stan", "mora", "land", "vania", "dor", "thia", "nesia"]
_C_CITY = ["ton", "grad", "burg", "vik", "polis", "mar", "ven", "sk"]
# coined words (places, titles, organisations, the generic kind)
_W_ON = ["Vesk", "Ard", "Myrr", "Quell", "Drav", "Torv", "Bel", "Orm", "Kel", "Zan", "Phal", "Tess", "Grim", "Yarr"]
_W_MID = ["i", "e", "o", "a", "el", "ar", "ow"]
_W_END = ["uin", "ay", "en", "an", "imar", "ith", "orn", "esse", "ane", "ule", "ix"]
# people
_F_ON = ["Tal", "Ore", "Mir", "Cas", "Bel", "Dor", "Ise", "Ven", "Lio", "Ary", "Qui", "Sel", "Ema", "Rho"]
_F_END = ["vik", "na", "ric", "wen", "lan", "dra", "mos", "ette", "ian", "ko", "lith", "ber"]
_L_ON = ["Oren", "Hal", "Vesk", "Mar", "Tren", "Ash", "Cor", "Lind", "Brom", "Quill", "Fen", "Ost", "Dra", "Wel"]
_L_END = ["sby", "wick", "ford", "ley", "holt", "mere", "ton", "ard", "ell", "ing", "avy", "rigg"]
# works
_ADJ = ["Glass", "Silent", "Amber", "Hollow", "Crimson", "Winter", "Paper", "Iron", "Sleeping", "Salt", "Velvet",
        "Ninth", "Drowned", "Copper"]
_NOUN = ["Orchard", "Lantern", "Harbour", "Choir", "Garden", "Tower", "Mirror", "Ferry", "Archive", "Orchestra",
         "Cartographer", "Lighthouse", "Carousel", "Widow"]
_WORK = ["The {a} {n} of {w}", "{w} and the {a} {n}", "The {n}s of {w}", "A {n} for {w}", "The {a} {n}: {w}"]
# places, organisations
_PLACE = ["Port {w}", "Mount {w}", "{w} Falls", "Lake {w}", "New {w}", "Fort {w}", "{w} Bay", "Saint {w}",
          "{w} Springs", "Upper {w}"]
_ORG = ["{w} Holdings", "the {w} Institute", "{w} Industries", "the {w} Foundation", "{w} Systems", "{w} Group",
        "the University of {w}", "{w} & {v}", "the {w} Trust", "{w} Biolabs"]
_ELEMENT_END = ["ium", "ine", "on", "ite"]


def _coined(rng: random.Random, end: Sequence[str] = _W_END) -> str:
    while True:                                   # no doubled vowel at a join ("Phaliix")
        on, mid, tail = rng.choice(_W_ON), rng.choice(_W_MID), rng.choice(end)
        if mid[-1] != tail[0] and on[-1] != mid[0]:
            return on + mid + tail


def _draw(kind: str, rng: random.Random) -> str:
    if kind == "country":
        name = rng.choice(_C_ON) + rng.choice(_C_MID) + rng.choice(_C_END)
        rng.choice(_C_ON), rng.choice(_C_MID), rng.choice(_C_CITY)     # made_up_countries draws the capital too
        return name
    if kind == "person":
        return rng.choice(_F_ON) + rng.choice(_F_END) + " " + rng.choice(_L_ON) + rng.choice(_L_END)
    if kind == "work":
        return rng.choice(_WORK).format(a=rng.choice(_ADJ), n=rng.choice(_NOUN), w=_coined(rng))
    if kind == "place":
        return rng.choice(_PLACE).format(w=_coined(rng))
    if kind == "organisation":
        return rng.choice(_ORG).format(w=_coined(rng), v=_coined(rng))
    if kind == "element":
        return _coined(rng, _ELEMENT_END)
    return _coined(rng)


def _rng(kind: str, seed: int) -> random.Random:
    return random.Random(7 + seed) if kind == "country" else random.Random(f"repedit.references/{kind}/{seed}")


@lru_cache(maxsize=4)
def _suite_subjects(files: tuple[tuple[str, float], ...]) -> frozenset[str]:
    out = set()
    for path, _ in files:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                if not str(d.get("source", "")).startswith("invented"):   # suites of invented entities don't count
                    out.add(str(d["subject"]).casefold())
    return frozenset(out)


def suite_subjects() -> frozenset[str]:
    """Subjects (casefolded) of every suite under probes/facts but the invented ones (read once per file state)."""
    from repedit.suites import probes_dir

    paths = sorted((probes_dir() / "facts").glob("*.jsonl"))
    return _suite_subjects(tuple((str(p), p.stat().st_mtime) for p in paths))


def invented(kind: str, n: int, seed: int = 0) -> list[str]:
    """`n` distinct invented names of `kind` (after `canonical_kind`), the same for the same (kind, seed);
    a prefix of a longer list of the same seed; none is a subject of a built-in suite."""
    kind = canonical_kind(kind)
    if n < 0:
        raise InputError(f"invented() needs n >= 0, got {n}")
    taken, rng, names = suite_subjects(), _rng(kind, seed), []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(names) == n:
            return names
        name = _draw(kind, rng)
        if name.casefold() in seen or name.casefold() in taken:
            continue
        seen.add(name.casefold())
        names.append(name)
    if len(names) == n:
        return names
    raise InputError(f"could not invent {n} distinct {kind} names (got {len(names)}); ask for fewer")


def _given(given: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(str(g).strip() for g in given if str(g).strip()))
    if len(names) < MIN_GIVEN:
        raise InputError(f"give at least {MIN_GIVEN} distinct unknown references (got {len(names)}): half train an "
                         "edit, the other half the knownness probe that grades it")
    return names


def references(kind: str, n_train: int = N_TRAIN, n_measure: int = N_MEASURE, seed: int = 0,
               given: Sequence[str] = ()) -> References:
    """Disjoint train / measure unknown references of `kind` (see the module docstring for the split).
    `given` (user-provided names, ≥ MIN_GIVEN) replaces the invented ones; then each set holds at most
    half of them, whatever n_train / n_measure ask."""
    if n_train < 0 or n_measure < 0:
        raise InputError(f"references() needs n_train, n_measure >= 0, got {n_train}, {n_measure}")
    k = canonical_kind(kind)
    if given:
        names = _given(given)
        half = (len(names) + 1) // 2
        return References(tuple(names[:half][:n_train]), tuple(names[half:][:n_measure]), k, "given")
    if n_train > TRAIN_POOL:
        raise InputError(f"at most {TRAIN_POOL} invented train references (asked {n_train}); give your own names")
    names = invented(k, TRAIN_POOL + n_measure, seed)
    return References(tuple(names[:n_train]), tuple(names[TRAIN_POOL:]), k, "invented")


def reference_sets(kind: str, given: Sequence[str] = (), n_train: int = N_TRAIN,
                   n_measure: int = N_MEASURE) -> References:
    """The unknown references a recipe uses for facts of `kind`: SAE-align trains towards `.train`, the
    knownness probe is fitted against `.measure` (the recipe's own references when `given`)."""
    return references(kind, n_train, n_measure, seed=0, given=tuple(given))


def majority_kind(kinds: Sequence[str]) -> tuple[str, dict[str, int]]:
    """(the most common canonical kind, ties to the first seen; counts per canonical kind)."""
    counts: dict[str, int] = {}
    for k in kinds:
        counts[canonical_kind(k)] = counts.get(canonical_kind(k), 0) + 1
    if not counts:
        return "entity", {}
    return max(counts, key=counts.__getitem__), counts


__all__ = ["KINDS", "MIN_GIVEN", "N_MEASURE", "N_TRAIN", "RELATED", "TRAIN_POOL", "KindFrames", "References",
           "canonical_kind", "frames", "invented", "majority_kind", "reference_sets", "references", "suite_subjects"]


SUBJECT_FORMS = {"country": "the Republic of {}"}   #: how an invented name reads as a subject of its kind


def as_subject(kind: str, name: str) -> str:
    """An invented name as it stands in a sentence ("the Republic of Talathia"; others unchanged)."""
    return SUBJECT_FORMS.get(canonical_kind(kind), "{}").format(name)
