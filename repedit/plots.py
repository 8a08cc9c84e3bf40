"""Plots people would rather look at than read (matplotlib, from the [plots] extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import ReprEditError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReprEditError("plots need matplotlib: pip install 'repedit[plots]'") from exc
    return plt


def bars(values: Sequence[float], path: str | Path, *, title: str, ylabel: str, xlabel: str = "layer",
         labels: Sequence[str] | None = None, highlight: Sequence[int] = ()) -> Path:
    """A bar chart (one bar per layer by default) saved as PNG; returns the path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.28), 3.2))
    xs = list(range(len(values)))
    colors = ["tab:red" if i in set(highlight) else "tab:blue" for i in xs]
    ax.bar(xs, list(values), color=colors)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels if labels is not None else [str(x) for x in xs], rotation=90 if labels else 0, fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
