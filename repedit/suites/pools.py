"""Pools for the memorisation signature: per key a memorised text M and two paraphrases C, B.

Natural pools are JSONL files under probes/memorised/ (text a pretrained model saw many times,
with hand-written register-matched paraphrases). Injected pools come from toy models: token
sequences memorised in training or by fine-tuning (M) against never-seen sequences (C, B).
`screen` keeps the keys whose M the model actually predicts well and whose paraphrases it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from repedit.errors import InputError, SuiteNotFoundError, close_matches
from repedit.suites import probes_dir

Item = str | tuple[int, ...]   # text, or token ids (toys)
CLASSES = ("memorised", "paraphrase_c", "paraphrase_b")


@dataclass(frozen=True)
class PoolKey:
    """One key: memorised item M, register-matched paraphrase C, second paraphrase B."""

    key: str
    memorised: Item
    paraphrase_c: Item
    paraphrase_b: Item
    source: str = ""

    def item(self, cls: str) -> Item:
        return getattr(self, cls)


@dataclass(frozen=True)
class Pool:
    """A named set of keys; `tokens=True` when items are token ids (toy pools)."""

    name: str
    keys: tuple[PoolKey, ...]
    tokens: bool = False

    def __post_init__(self) -> None:
        if len(self.keys) < 3:
            raise InputError(f"pool {self.name!r} has {len(self.keys)} keys; leave-one-out needs at least 3")
        names = [k.key for k in self.keys]
        if len(set(names)) != len(names):
            raise InputError(f"pool {self.name!r} has duplicate keys")

    def subset(self, names: Sequence[str]) -> Pool:
        wanted = set(names)
        return replace(self, keys=tuple(k for k in self.keys if k.key in wanted))

    def __len__(self) -> int:
        return len(self.keys)


def pool_names() -> list[str]:
    return sorted(p.stem for p in (probes_dir() / "memorised").glob("*.jsonl"))


def load_pool(name: str = "natural") -> Pool:
    """A natural pool (all candidates; screen before use): a name (probes/memorised/<name>.jsonl) or a
    path to a JSONL or CSV file of records key, memorised, paraphrase_c, paraphrase_b (, source)."""
    from repedit.suites.user import is_path, read_pool_records

    path = Path(name) if is_path(name) or Path(name).is_file() else probes_dir() / "memorised" / f"{name}.jsonl"
    if not path.exists():
        raise SuiteNotFoundError(f"no pool {name!r}; available: {pool_names()} "
                                 f"(closest: {close_matches(name, pool_names())}), or a path to a .jsonl/.csv file")
    return pool_from_records(read_pool_records(path), name=path.stem)


def pool_from_records(records, name: str = "inline") -> Pool:
    """A Pool from records (dicts with key, memorised, paraphrase_c, paraphrase_b, optional source), e.g. a
    recipe's [[targets.pool_keys]]; validated like a file's."""
    from repedit.suites.user import pool_records

    keys = [PoolKey(r["key"], r["memorised"], r["paraphrase_c"], r["paraphrase_b"], r.get("source", ""))
            for r in pool_records(list(records))]
    return Pool(name=name, keys=tuple(keys))


def toy_pool(handle, *, n_keys: int = 24, memorised: torch.Tensor | None = None,
             never_seen: torch.Tensor | None = None, name: str = "toy-memorised") -> Pool:
    """Token pool for a toy: M = a memorised sequence, C and B = two never-seen sequences.

    Defaults: the toy's trained-in `memorised` set against its `heldout` set.
    """
    seqs = handle.extras.get("sequences")
    if memorised is None or never_seen is None:
        if seqs is None:
            raise InputError("toy_pool needs a toy handle (repedit.load('toy:memorise')) or explicit sequences")
        memorised = seqs["memorised"] if memorised is None else memorised
        never_seen = seqs["heldout"] if never_seen is None else never_seen
    if len(memorised) < n_keys or len(never_seen) < 2 * n_keys:
        raise InputError(f"need {n_keys} memorised and {2 * n_keys} never-seen sequences, "
                         f"got {len(memorised)} and {len(never_seen)}; lower n_keys")
    keys = tuple(
        PoolKey(f"{name}-{i}", tuple(memorised[i].tolist()), tuple(never_seen[2 * i].tolist()),
                tuple(never_seen[2 * i + 1].tolist()), source=name)
        for i in range(n_keys))
    return Pool(name=name, keys=keys, tokens=True)


def item_ids(handle, item: Item) -> list[int]:
    if isinstance(item, tuple):
        return list(item)
    return handle.tokenizer.encode(item, add_special_tokens=True)












