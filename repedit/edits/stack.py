"""EditStack: apply edits in sequence, journal them, revert bit-exactly, never leave half an edit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from repedit.edits.base import Edit, EditError, check_edit
from repedit.forward.weights import tensor_sha256


@dataclass(frozen=True)
class JournalEntry:
    index: int
    method: str
    params: tuple[str, ...]
    sha_before: dict[str, str]
    sha_after: dict[str, str]
    seconds: float
    rounded: dict[str, float] = field(default_factory=dict)   #: share of each change its dtype rounded away

    def to_dict(self) -> dict:
        return {"index": self.index, "method": self.method, "params": list(self.params),
                "sha256_before": self.sha_before, "sha256_after": self.sha_after, "seconds": self.seconds,
                "rounded": self.rounded}


class EditStack:
    """Edits applied to one model, in order. `push` is all-or-nothing; `pop`/`revert_all` restore
    the exact bytes that were there before (snapshots of the touched parameters are kept)."""

    def __init__(self, handle):
        self.handle = handle
        self.edits: list[Edit] = []
        self.journal: list[JournalEntry] = []
        self._snapshots: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.edits)

    def push(self, edit: Edit) -> JournalEntry:
        """Apply `edit`. On any failure the weights are left bit-identical and EditError is raised."""
        check_edit(edit)
        t0 = time.perf_counter()
        new = edit.new_values(self.handle)          # raises before any write
        params = dict(self.handle.model.named_parameters())
        snap = {name: params[name].detach().clone() for name in new}
        sha_before = {n: tensor_sha256(t) for n, t in snap.items()}
        try:                                          # everything after the first write can be undone
            with torch.no_grad():
                for name, written in new.items():
                    params[name].copy_(written.value)
            self._check_written(new, params)
            entry = JournalEntry(
                index=len(self.edits), method=edit.method, params=tuple(new), sha_before=sha_before,
                sha_after={n: tensor_sha256(params[n]) for n in new}, seconds=round(time.perf_counter() - t0, 4),
                rounded={n: round(w.rounded, 6) for n, w in new.items()})
        except BaseException as exc:                  # restore whatever was written, then report
            with torch.no_grad():
                for name, value in snap.items():
                    params[name].copy_(value)
            if not isinstance(exc, Exception):
                raise
            raise EditError(f"{edit.method}: writing the edit failed ({exc}); weights restored") from exc
        self.edits.append(edit)
        self._snapshots.append(snap)
        self.journal.append(entry)
        return entry

    @staticmethod
    def _check_written(new: dict, params: dict) -> None:
        """The parameters hold exactly the values that were computed (a write that converts or is
        redirected elsewhere, e.g. by an offloading hook, is caught here and undone)."""
        for name, written in new.items():
            if not torch.equal(params[name].detach(), written.value):
                raise EditError(f"{name}: the parameter does not hold the value that was written")

    def pop(self) -> Edit:
        """Undo the last edit exactly (its parameters get their previous bytes back)."""
        if not self.edits:
            raise EditError("the stack is empty; nothing to revert")
        snap = self._snapshots.pop()
        params = dict(self.handle.model.named_parameters())
        with torch.no_grad():
            for name, value in snap.items():
                params[name].copy_(value)
        self.journal.pop()
        return self.edits.pop()

    def originals(self) -> dict[str, torch.Tensor]:
        """Every parameter the stack touched, as it was before the first edit that touched it (copies)."""
        out: dict[str, torch.Tensor] = {}
        for snap in self._snapshots:
            for name, value in snap.items():
                out.setdefault(name, value.clone())
        return out

    def revert_all(self) -> None:
        while self.edits:
            self.pop()

    @contextmanager
    def temporarily(self, edit: Edit) -> Iterator[JournalEntry]:
        """Apply `edit` inside a `with` block and revert it on exit (also on exceptions)."""
        entry = self.push(edit)
        try:
            yield entry
        finally:
            while len(self.edits) > entry.index:
                self.pop()

    def to_dict(self) -> list[dict]:
        return [e.to_dict() for e in self.journal]




@contextmanager
def applied(handle, edit: Edit) -> Iterator[None]:
    """Explore an edit: apply it for the duration of a `with` block, restoring the weights after."""
    with EditStack(handle).temporarily(edit):
        yield
