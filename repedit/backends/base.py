"""One protocol for every hooking backend.

A backend runs a forward pass, reads full activations [batch, seq, d] at (layer, point) keys
and optionally rewrites them with functions `fn(tensor) -> tensor`. All hooks it installs are
removed when `run` returns or raises. `stop_early=True` ends the forward after the deepest
read when nothing later is needed (no logits are returned then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from repedit.errors import HookError, SiteNotFoundError, close_matches
from repedit.sites import Point, Site

Key = tuple[int, Point]                           # (layer, point): a site without position
WriteFn = Callable[[torch.Tensor], torch.Tensor]  # [batch, seq, d] -> [batch, seq, d]


def key_of(site: Site | Key) -> Key:
    return (site.layer, site.point) if isinstance(site, Site) else (int(site[0]), Point(site[1]))


def order(key: Key) -> tuple[int, int]:
    return Site(key[0], key[1]).order_key


@dataclass
class RunResult:
    logits: torch.Tensor | None              # [batch, seq, vocab], None when stopped early
    acts: dict[Key, torch.Tensor]            # (layer, point) -> [batch, seq, d]


class Backend(Protocol):
    name: str

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            reads: Sequence[Key] = (), writes: Mapping[Key, WriteFn] | None = None,
            stop_early: bool = False) -> RunResult: ...


class StopForward(Exception):
    """Raised inside a hook to end a forward pass after the deepest site needed."""


def deepest(reads: Sequence[Key], writes: Mapping[Key, WriteFn] | None) -> Key | None:
    keys = list(reads) + list(writes or {})
    return max(keys, key=order) if keys else None


def check_keys(handle, keys: Sequence[Key]) -> None:
    for layer, _point in keys:
        handle.check_layer(layer)


BACKENDS: dict[str, Callable] = {}


def register(name: str):
    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


def get_backend(handle, name: str = "torch") -> Backend:
    """Backend `name` ("torch", "lens" or "nnsight") bound to `handle`, cached on the handle."""
    from repedit.backends import lens, nnsight_backend, torch_hooks  # noqa: F401  (register themselves)

    if name not in BACKENDS:
        raise SiteNotFoundError(f"unknown backend {name!r}; valid: {sorted(BACKENDS)} "
                                f"(closest: {close_matches(name, BACKENDS)})")
    cache = handle.extras.setdefault("backends", {})
    if name not in cache:
        cache[name] = BACKENDS[name](handle)
    return cache[name]


def expect_all_read(acts: Mapping[Key, torch.Tensor], reads: Sequence[Key], backend: str) -> None:
    missing = [k for k in reads if k not in acts]
    if missing:
        raise HookError(f"backend {backend!r} did not reach {missing}; its hooks never fired")
