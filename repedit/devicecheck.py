"""A check for the rule "no tensor is created without the device it will meet", runnable on a
CPU-only machine.

`factory_trap()` is a torch function mode that notices every tensor factory call
(`torch.zeros`, `torch.tensor`, `torch.arange`, ...) made from repedit's own code without an
explicit `device=`. On a CPU-only machine such a call works by accident; on a GPU (or with a
`device_map` split) it makes a CPU tensor that later meets a CUDA tensor. The test suite runs
with the trap on (tests/conftest.py), so CI fails at the offending line without a GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from repedit.errors import ReprEditError

PACKAGE = str(Path(__file__).resolve().parent)
FACTORIES = frozenset({
    torch.zeros, torch.ones, torch.empty, torch.full, torch.eye, torch.arange, torch.linspace,
    torch.logspace, torch.randn, torch.rand, torch.randint, torch.randperm, torch.tensor, torch.as_tensor,
    torch.normal, torch.scalar_tensor, torch.empty_strided,
})


class DeviceRuleError(ReprEditError, RuntimeError):
    """A tensor was created in repedit code without saying which device it belongs on."""


#: torch's dispatch machinery between a factory call and the frame that made it (skipped, not blamed)
_DISPATCH = ("torch/overrides.py", "torch/utils/_python_dispatch.py", "torch/_tensor.py", "torch/_ops.py")


def _caller() -> str | None:
    """'file:line' of the nearest repedit frame calling into torch, or None if none is repedit's."""
    frame = sys._getframe(2)
    while frame is not None:
        fname = frame.f_code.co_filename
        if fname.startswith(PACKAGE):
            if fname == __file__:
                frame = frame.f_back
                continue
            return f"{Path(fname).relative_to(Path(PACKAGE).parent)}:{frame.f_lineno}"
        if not fname.endswith(_DISPATCH):
            return None                       # torch's own code (an optimiser's step), a library's or the user's
        frame = frame.f_back
    return None


class FactoryTrap(TorchFunctionMode):
    """Record (or raise on) factory calls from repedit code that pass no `device`."""

    def __init__(self, strict: bool = True):
        super().__init__()
        self.strict = strict
        self.found: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None and not _inherits_device(func, args):
            where = _caller()
            if where is not None:
                self.found.setdefault(where, func.__name__)
                if self.strict:
                    raise DeviceRuleError(f"{where}: torch.{func.__name__}(...) without device=; create the "
                                          "tensor on the device of the tensors it will meet")
        return func(*args, **kwargs)


def _inherits_device(func, args) -> bool:
    """torch.tensor / as_tensor of an existing tensor keep its device."""
    return func in (torch.tensor, torch.as_tensor) and bool(args) and isinstance(args[0], torch.Tensor)


@contextmanager
def factory_trap(strict: bool = True) -> Iterator[FactoryTrap]:
    """Inside the block, factory calls from repedit without `device=` raise `DeviceRuleError`
    (strict) or are collected in `trap.found` ({'file:line': 'zeros'})."""
    with FactoryTrap(strict) as trap:
        yield trap
