"""The user cache: converted models, toy models and statistics live under one root."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """`$REPEDIT_CACHE`, else `$XDG_CACHE_HOME/repedit`, else `~/.cache/repedit`."""
    env = os.environ.get("REPEDIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "repedit"


@contextmanager
def atomic_dir(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to `final` in one step.

    On any exception the temporary directory is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if not force:
                raise FileExistsError(f"{final} already exists; pass force=True (CLI: --force) to replace it")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, building it atomically with `build(tmp_dir)` if it is not there yet."""
    final = Path(final)
    if (final / ".complete").exists():
        return final
    if final.exists():  # a leftover from an interrupted build of an older version
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
    return final
