"""Typed errors. Each subclasses `ReprEditError` and the matching builtin, and says how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReprEditError(Exception):
    """Base class of every error repedit raises on purpose."""


def close_matches(word: str, options: Iterable[str], n: int = 5) -> list[str]:
    """The options most similar to `word` (for 'did you mean' messages)."""
    options = list(options)
    found = difflib.get_close_matches(word, options, n=n, cutoff=0.4)
    return found or options[:n]


class SiteNotFoundError(ReprEditError, KeyError):
    """A site (layer, point) does not exist in this model."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class ModelNotFoundError(ReprEditError, FileNotFoundError):
    """A model id or path cannot be resolved offline."""


class ModelLoadError(ReprEditError, RuntimeError):
    """A model was found but could not be loaded or converted."""


class ConfigError(ReprEditError, ValueError):
    """A configuration value is invalid."""


class InputError(ReprEditError, ValueError):
    """A function received input it cannot use (empty prompts, wrong shape, ...)."""


class SuiteNotFoundError(ReprEditError, FileNotFoundError):
    """A probe suite name does not exist under probes/."""


class HookError(ReprEditError, RuntimeError):
    """Hooks could not be installed or a backend reported a mismatch."""


class PresetNotFoundError(ReprEditError, KeyError):
    """A model has no per-model preset (edit layers, signature depth, SAE); the message names the
    command that builds one (`repedit presets build <model>`)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class SAEMismatchError(ReprEditError, ValueError):
    """An SAE was trained on another model (or reads another width) than the one it is used with."""


class FormatVersionError(ReprEditError, ValueError):
    """A saved file (report, run state, export manifest, certificate, preset, ...) is of a format version this
    repedit does not read; the message names the file, the version, the versions read here and the repedit
    that wrote it, and says to upgrade repedit or re-run with this one (`repedit.formats`)."""

    def __init__(self, message: str, *, path: str | None = None, found=None, reads: tuple[int, ...] = (),
                 writer: str | None = None):
        super().__init__(message)
        self.path, self.found, self.reads, self.writer = path, found, reads, writer
