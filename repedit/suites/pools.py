"""Pools for the memorisation signature: per key a memorised text M and two paraphrases C, B.

Natural pools are JSONL files under probes/memorised/ (text a pretrained model saw many times,
with hand-written register-matched paraphrases). Injected pools come from toy models: token
sequences memorised in training or by fine-tuning (M) against never-seen sequences (C, B).
`screen` keeps the keys whose M the model actually predicts well and whose paraphrases it does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from repedit.errors import InputError, SuiteNotFoundError, close_matches
from repedit.suites import probes_dir
from repedit.text import continuation_logprobs

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


# ----- screening ---------------------------------------------------------------------------------
#: Thresholds on mean log-prob per token, chosen on SmolLM2-135M (probes/memorised/README.md):
#: a key passes when M is above THETA_M and both paraphrases are below THETA_C (the values used
#: for Pythia-70M in the source). Scored after a SKIP-token cue: nothing predicts a text's opening.
THETA_M = -2.0
THETA_C = -3.0
SKIP = 4


@dataclass(frozen=True)
class ScreenRow:
    key: str
    memorised: float        # mean log-prob per token (first token excluded)
    paraphrase_c: float
    paraphrase_b: float
    passed: bool


@dataclass(frozen=True)
class ScreenReport:
    model: str
    pool: str
    theta_m: float
    theta_c: float
    skip: int
    rows: tuple[ScreenRow, ...]

    @property
    def passing(self) -> list[str]:
        return [r.key for r in self.rows if r.passed]

    def to_dict(self) -> dict:
        return {"model": self.model, "pool": self.pool, "theta_m": self.theta_m, "theta_c": self.theta_c,
                "skip": self.skip, "n_passing": len(self.passing), "rows": [asdict(r) for r in self.rows]}


def token_logprobs(handle, items: Sequence[Item], *, skip: int = 1, batch_size: int = 16) -> list[float]:
    """Mean log-prob per token of each item under the model, over tokens after the first `skip`."""
    if skip < 1:
        raise InputError(f"skip must be >= 1 (the first token has no context), got {skip}")
    rows = [item_ids(handle, it) for it in items]
    if any(len(r) <= skip for r in rows):
        raise InputError(f"every item needs more than skip={skip} tokens to score")
    return continuation_logprobs(handle, [r[:skip] for r in rows], [r[skip:] for r in rows], batch_size)


def screen(handle, pool: Pool, *, theta_m: float = THETA_M, theta_c: float = THETA_C,
           skip: int = SKIP) -> ScreenReport:
    """Log-prob per token of every item (after `skip` tokens); a key passes when M > theta_m and C, B < theta_c."""
    if not theta_c <= theta_m:
        raise InputError(f"theta_c ({theta_c}) must not exceed theta_m ({theta_m})")
    items = [k.item(c) for k in pool.keys for c in CLASSES]
    lp = token_logprobs(handle, items, skip=skip)
    rows = []
    for i, k in enumerate(pool.keys):
        m, c, b = lp[3 * i: 3 * i + 3]
        ok = math.isfinite(m) and m > theta_m and c < theta_c and b < theta_c
        rows.append(ScreenRow(k.key, round(m, 4), round(c, 4), round(b, 4), ok))
    return ScreenReport(model=handle.id, pool=pool.name, theta_m=theta_m, theta_c=theta_c, skip=skip,
                        rows=tuple(rows))


def screened(handle, pool: Pool, **thresholds) -> tuple[Pool, ScreenReport]:
    """The pool restricted to keys that pass screening on this model (error if fewer than 3)."""
    report = screen(handle, pool, **thresholds)
    if len(report.passing) < 3:
        raise InputError(f"only {len(report.passing)} keys of pool {pool.name!r} pass screening on "
                         f"{handle.id}; lower the thresholds or add keys ({report.to_dict()['rows']})")
    return pool.subset(report.passing), report
