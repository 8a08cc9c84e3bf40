"""A minimal reader of WordNet 3.0's `data.noun` (Princeton's published format, as Debian's
`wordnet-base` ships it): synsets with their lemmas, lexicographer file and pointers. Enough to list
named people with what they were (instance hypernyms), without nltk's data downloader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from repedit.errors import InputError

NOUN_PERSON = 18                      # lexicographer file number of noun.person


@dataclass(frozen=True)
class Synset:
    offset: str
    lexfile: int
    lemmas: tuple[str, ...]           # underscores replaced by spaces
    instance_of: tuple[str, ...]      # offsets of instance hypernyms ("@i")
    gloss: str


def wordnet_dir() -> Path:
    """`$WORDNET_DIR`, else /usr/share/wordnet (Debian's wordnet-base)."""
    return Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))


def read_nouns(directory: Path | None = None) -> dict[str, Synset]:
    """Every noun synset of `directory`/data.noun, by offset."""
    path = Path(directory or wordnet_dir()) / "data.noun"
    if not path.exists():
        raise InputError(f"no WordNet data at {path}; install Debian's wordnet-base (`apt-get install wordnet-base`, "
                         "or `apt-get download wordnet-base && dpkg -x wordnet-base_*.deb /tmp/wn` and set "
                         "WORDNET_DIR=/tmp/wn/usr/share/wordnet)")
    out = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):                         # the licence header
            continue
        head, _, gloss = line.partition(" | ")
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = tuple(f[4 + 2 * i].replace("_", " ") for i in range(n_words))
        i = 4 + 2 * n_words
        n_ptrs, i = int(f[i]), i + 1
        inst = []
        for _ in range(n_ptrs):
            if f[i] == "@i":
                inst.append(f[i + 1])
            i += 4
        out[f[0]] = Synset(f[0], int(f[1]), lemmas, tuple(inst), gloss.strip())
    return out
