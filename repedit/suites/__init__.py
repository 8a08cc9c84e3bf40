"""Probe suites as data: fact suites (five forms per fact) and text corpora under probes/."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, SuiteNotFoundError, close_matches

FORMS = ("qa", "blank", "mc", "adversarial", "paraphrase")


def probes_dir() -> Path:
    """`$REPEDIT_PROBES`, else the probes/ folder of the source tree."""
    env = os.environ.get("REPEDIT_PROBES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "probes"


@dataclass(frozen=True)
class Fact:
    """One fact with its five forms (see repedit.suites.build)."""

    id: str
    subject: str
    relation: str
    answer: str
    aliases: tuple[str, ...]
    forms: dict
    source: str
    kind: str = "entity"     #: what the subject is (country, person, place, work, organisation, …)

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


def relation_kind(relation: str) -> str:
    """The kind of subject a built-in relation is about ("entity" when unknown)."""
    from .build import RELATIONS

    return RELATIONS.get(relation, {}).get("kind", "entity")


def available_suites() -> list[str]:
    return sorted(p.stem for p in (probes_dir() / "facts").glob("*.jsonl"))


def load_suite(name_or_path: str, limit: int | None = None) -> list[Fact]:
    """Facts of a suite by name (probes/facts/<name>.jsonl) or by path to a JSONL file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = probes_dir() / "facts" / f"{name_or_path}.jsonl"
    if not path.exists():
        names = available_suites()
        raise SuiteNotFoundError(f"no suite {name_or_path!r}; available: {names} "
                                 f"(closest: {close_matches(str(name_or_path), names)}); "
                                 "rebuild them with `./dev build-probes`")
    facts = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            facts.append(Fact(id=d["id"], subject=d["subject"], relation=d["relation"], answer=d["answer"],
                              aliases=tuple(d.get("aliases", ())), forms=d["forms"], source=d["source"],
                              kind=d.get("kind") or relation_kind(d["relation"])))
        except (KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}:{i}: malformed fact ({exc}); regenerate with `./dev build-probes`") from exc
    if limit is not None:
        facts = facts[:limit]
    return facts


def unknown_entities(limit: int | None = None) -> list[str]:
    """Invented country names (probes/facts/unknown-entities.jsonl) without "the Republic of "."""
    return [f.subject.removeprefix("the Republic of ") for f in load_suite("unknown-entities", limit=limit)]


def load_text(name: str = "news", split: str = "heldout") -> list[str]:
    """Documents of a text corpus under probes/text/ (`split`: "train" or "heldout")."""
    path = probes_dir() / "text" / f"{name}.{split}.txt"
    if not path.exists():
        have = sorted(p.name for p in (probes_dir() / "text").glob("*.txt"))
        raise SuiteNotFoundError(f"no text corpus {path.name}; available: {have}")
    return [line for line in path.read_text().splitlines() if line.strip()]
