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


def signature_plot(result, path: str | Path) -> Path:
    """Per-depth memorisation signature: True/Pure LOO, gap with its 95% band, and the controls."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = result.curve
    xs = result.depths
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(xs, c.true_loo, "o-", label="True-LOO (M vs C)")
    ax1.plot(xs, c.pure_loo, "s-", label="Pure-LOO (C vs B)")
    ax1.plot(xs, result.shuffled_mean, ":", color="grey", label="shuffled labels")
    ax1.axhline(0.5, color="black", lw=0.6)
    ax1.set_ylim(0, 1.02)
    ax1.set_xlabel("depth (0 = embeddings)")
    ax1.set_ylabel("leave-one-key-out accuracy")
    ax1.legend(fontsize=7)
    lo, hi = zip(*c.gap_ci)
    ax2.fill_between(xs, lo, hi, alpha=0.25, color="tab:red")
    ax2.plot(xs, c.gap, "o-", color="tab:red", label=f"gap {result.model}")
    if result.random_init is not None:
        ax2.plot(xs, result.random_init.gap, "x--", color="grey", label="gap, random init")
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xlabel("depth (0 = embeddings)")
    ax2.set_ylabel("memorisation-specific gap (True − Pure)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"memorisation signature — {result.model}, pool {result.pool} ({len(result.keys)} keys, "
                 f"{result.n_views} contexts)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
