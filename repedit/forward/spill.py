"""Bit-exact copies of large CPU tensors kept in a temporary file instead of memory.

A whole-model fine-tune (the relearning attack) must put every weight back bit for bit afterwards;
holding that copy in RAM costs one more model's size at the run's peak. `Spilled` writes the tensors'
bytes to an unlinked temporary file with plain file I/O (the page cache is not the process's resident
memory) and reads one tensor back when asked.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping

import numpy as np
import torch

SPILL_BYTES = 256 * 2**20        #: copies larger than this (all CPU tensors together) go to disk


def _raw(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (no copy for a contiguous CPU tensor; bf16 included)."""
    return t.detach().contiguous().view(-1).view(torch.uint8).numpy()


class Spilled(Mapping):
    """{name: tensor} saved to a temporary file; `spilled[name]` reads that tensor back (a new CPU tensor)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._file = tempfile.TemporaryFile(prefix="repedit-spill-")
        self._where: dict[str, tuple[int, torch.dtype, torch.Size]] = {}
        for name, t in tensors.items():
            self._where[name] = (self._file.tell(), t.dtype, t.shape)
            self._file.write(memoryview(_raw(t)))
        self._file.flush()

    def __getitem__(self, name: str) -> torch.Tensor:
        offset, dtype, shape = self._where[name]
        out = torch.empty(shape, dtype=dtype, device="cpu")
        self._file.seek(offset)
        self._file.readinto(memoryview(_raw(out)))
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._file.close()


def saved_copy(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Exact copies of `tensors`: in memory (clones), or — CPU tensors over `SPILL_BYTES` in all — in a
    temporary file (`Spilled`; close it when done)."""
    cpu = all(t.device.type == "cpu" for t in tensors.values())
    if cpu and sum(t.numel() * t.element_size() for t in tensors.values()) > SPILL_BYTES:
        return Spilled(tensors)
    return {n: t.detach().clone() for n, t in tensors.items()}
