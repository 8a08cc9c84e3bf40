"""Shared behaviour of residual-stream rewrites at one depth (PGA projections, LEACE erasers):
the backend write table and a `with` block that installs the rewrite as a forward hook."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DepthRewrite:
    """Mixin: subclasses define `depth` and `rewrite(x)`; gives `writes()` and `active(handle)`."""

    mergeable = False

    def writes(self) -> dict:
        from repedit.fit.pool_features import depth_key

        return {depth_key(self.depth): self.rewrite}

    @contextmanager
    def active(self, handle) -> Iterator[None]:
        """Install the rewrite as a forward hook for the duration of a `with` block (generation works)."""
        from repedit.backends.torch_hooks import installed

        with installed(handle, self.writes()):
            yield
