"""Probe suites as data: fact suites (five forms per fact) and text corpora under probes/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repedit.data import data_dir, describe
from repedit.errors import SuiteNotFoundError, close_matches

FORMS = ("qa", "blank", "mc", "adversarial", "paraphrase")


def probes_dir() -> Path:
    """The probes folder: `$REPEDIT_PROBES`, else `$REPEDIT_DATA/probes`, else the checkout's probes/, else
    the copy installed with the package (`repedit.data.data_dir`; `DataNotFoundError` names the settings)."""
    return data_dir("probes")


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
    redirect_to: str | None = None   #: a harmless concept ROCR should make the subject read as (optional)

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


def relation_kind(relation: str) -> str:
    """The kind of subject a built-in relation is about ("entity" when unknown)."""
    from repedit.suites.build import RELATIONS

    return RELATIONS.get(relation, {}).get("kind", "entity")


def available_suites() -> list[str]:
    return sorted(p.stem for p in (probes_dir() / "facts").glob("*.jsonl"))


def load_suite(name_or_path: str, limit: int | None = None, templates: dict | None = None) -> list[Fact]:
    """Facts of a suite: a built-in name (probes/facts/<name>.jsonl) or a path to a JSONL or CSV file of
    full records (the built-in format) or minimal ones (subject, answer, prompt; the missing forms are
    generated, see `repedit.suites.records`). `templates`: relation → {qa, blank, paraphrase, shot}."""
    from repedit.suites.user import is_path

    path = Path(name_or_path)
    if not (is_path(name_or_path) or path.is_file()):
        path = probes_dir() / "facts" / f"{name_or_path}.jsonl"
    if not path.exists():
        names = available_suites()
        raise SuiteNotFoundError(f"no suite {name_or_path!r}; available: {names} "
                                 f"(closest: {close_matches(str(name_or_path), names)}), or a path to a .jsonl/"
                                 f".csv file; built-in suites are read from {describe('probes')} "
                                 "(REPEDIT_PROBES / REPEDIT_DATA choose another folder); rebuild them with "
                                 "`./dev build-probes`")
    facts = load_facts(path, templates)
    if limit is not None:
        facts = facts[:limit]
    return facts


def suite_facts(suite: str = "", facts: tuple = (), templates: dict | None = None) -> list[Fact]:
    """A recipe's facts: inline records (`facts`, [[targets.facts]]) if any, else the suite (name or path)."""
    if facts:
        from repedit.suites.user import facts_from_records

        return facts_from_records(list(facts), templates, origin="inline",
                                  wheres=[f"[[targets.facts]] {i + 1}" for i in range(len(facts))])
    return load_suite(suite, templates=templates)


def unknown_entities(limit: int | None = None) -> list[str]:
    """Invented country names (probes/facts/unknown-entities.jsonl) without "the Republic of "."""
    return [f.subject.removeprefix("the Republic of ") for f in load_suite("unknown-entities", limit=limit)]


def load_text(name: str = "news", split: str = "heldout") -> list[str]:
    """Documents of a text corpus under probes/text/ (`split`: "train" or "heldout")."""
    path = probes_dir() / "text" / f"{name}.{split}.txt"
    if not path.exists():
        have = sorted(p.name for p in (probes_dir() / "text").glob("*.txt"))
        raise SuiteNotFoundError(f"no text corpus {path.name} in {describe('probes')}; available: {have}")
    return [line for line in path.read_text().splitlines() if line.strip()]


# user files and minimal records (re-exported)
from repedit.suites.user import facts_from_records, forms_missing_subject, load_facts  # noqa: E402, F401
