"""Capture activations at many sites in one pass, batched, padding-aware, with early stop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from repedit.backends.base import Key, get_backend, key_of
from repedit.errors import InputError
from repedit.sites import Site


def select_positions(acts: torch.Tensor, attention_mask: torch.Tensor, position: int | None) -> torch.Tensor:
    """Pick one token per row among its real tokens: [batch, seq, d] -> [batch, d].

    `position` indexes the real (attention_mask == 1) tokens, so -1 is each row's last real
    token for either padding side. None returns `acts` unchanged.
    """
    if position is None:
        return acts
    mask = attention_mask.to(acts.device)          # a device_map split: the mask meets this layer's device
    lengths = mask.sum(dim=1)
    starts = mask.argmax(dim=1)  # first real token (0 for right padding)
    idx = lengths + position if position < 0 else torch.full_like(lengths, position)
    if (idx < 0).any() or (idx >= lengths).any():
        raise InputError(f"position {position} is outside a row of length {int(lengths.min())}")
    return acts[torch.arange(acts.shape[0], device=acts.device), starts + idx]


@dataclass(frozen=True)
class Captured:
    """Activations per site: [n_texts, d] for a fixed position, or a list of [seq_i, d] for all."""

    acts: dict[Site, torch.Tensor | list[torch.Tensor]]
    n_tokens: int

    def __getitem__(self, site: Site) -> torch.Tensor | list[torch.Tensor]:
        return self.acts[site]


def iter_batches(handle, texts: Sequence[str], batch_size: int, chat: bool = False,
                 max_length: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    for i in range(0, len(texts), batch_size):
        yield handle.encode(list(texts[i: i + batch_size]), chat=chat, max_length=max_length)


@torch.no_grad()
def capture(handle, texts: Sequence[str], sites: Sequence[Site], *, batch_size: int = 8,
            backend: str = "torch", chat: bool = False, max_length: int | None = 256,
            progress: bool | None = None) -> Captured:
    """Activations of `texts` at `sites` in one forward per batch, stopping after the deepest site.

    Returns `Captured`: for sites with an int position, a tensor [n_texts, d]; for position
    None, a list with one [seq_i, d] tensor per text (padding removed).
    """
    if isinstance(texts, str) or not texts:
        raise InputError("capture() takes a non-empty list of texts")
    if not sites:
        raise InputError("capture() needs at least one Site, e.g. Site(12, 'resid_post')")
    for s in sites:
        handle.check_site(s)
    keys: list[Key] = sorted({key_of(s) for s in sites})
    be = get_backend(handle, backend)
    out: dict[Site, list] = {s: [] for s in sites}
    n_tokens = 0
    show = progress if progress is not None else len(texts) > 8 * batch_size
    batches = iter_batches(handle, texts, batch_size, chat=chat, max_length=max_length)
    for batch in tqdm(batches, total=-(-len(texts) // batch_size), disable=not show, desc="capture"):
        mask = batch["attention_mask"]
        n_tokens += int(mask.sum())
        res = be.run(batch["input_ids"], mask, reads=keys, stop_early=True)
        for s in sites:
            full = res.acts[key_of(s)]
            if s.position is None:
                keep = mask.to(full.device).bool()
                out[s].extend(full[i, keep[i]].clone() for i in range(full.shape[0]))
            else:
                out[s].append(select_positions(full, mask, s.position))
    acts = {s: (v if s.position is None else torch.cat(v)) for s, v in out.items()}
    return Captured(acts=acts, n_tokens=n_tokens)
