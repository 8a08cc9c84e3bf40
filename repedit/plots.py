"""Plots people would rather look at than read (matplotlib, from the [plots] extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from repedit.errors import ReprEditError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReprEditError("plots need matplotlib: pip install 'repedit[plots]'") from exc
    return plt


def _target(path: str | Path) -> Path:
    """`path` as a Path whose folder exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(values: Sequence[float], path: str | Path, *, title: str, ylabel: str, xlabel: str = "layer",
         labels: Sequence[str] | None = None, highlight: Sequence[int] = ()) -> Path:
    """A bar chart (one bar per layer by default) saved as PNG; returns the path."""
    plt, path = _pyplot(), _target(path)
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.28), 3.2))
    xs = list(range(len(values)))
    colors = ["tab:red" if i in set(highlight) else "tab:blue" for i in xs]
    ax.bar(xs, list(values), color=colors)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels if labels is not None else [str(x) for x in xs], rotation=90 if labels else 0, fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    return _save(plt, fig, path)


def signature_plot(result, path: str | Path) -> Path:
    """Per-depth memorisation signature: True/Pure LOO, gap with its 95% band, and the controls."""
    plt, path = _pyplot(), _target(path)
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
    return _save(plt, fig, path)


_TRACE_CMAPS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
_TRACE_NAMES = {"resid": "residual (resid_post)", "mlp": "MLP output (window)", "attn": "attention output (window)"}


def _trace_panels(plt, n_panels: int, n_rows: int, n_layers: int):
    width = max(4.0, 0.13 * n_layers + 2.5)
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, 0.32 * n_rows + 2.0), squeeze=False)
    return fig, list(axes[0])


def _layer_ticks(ax, layers: Sequence[int]) -> None:
    step = max(1, len(layers) // 15)
    xs = list(range(0, len(layers), step))
    ax.set_xticks(xs)
    ax.set_xticklabels([str(layers[i]) for i in xs], fontsize=7)
    ax.set_xlabel("layer")


def trace_heatmap(result, path: str | Path) -> Path:
    """Causal trace of one prompt (a `TraceResult`): one panel per kind, tokens (subject marked
    `*`) by layers, colour = answer probability with that state restored."""
    plt, path = _pyplot(), _target(path)
    s, e = result.subject_span
    labels = [f"{(t.strip() or repr(t))}{'*' if s <= i < e else ''}" for i, t in enumerate(result.tokens)]
    fig, axes = _trace_panels(plt, len(result.kinds), len(labels), len(result.layers))
    for ax, kind in zip(axes, result.kinds):
        grid = result.restored[kind].numpy()
        im = ax.imshow(grid, aspect="auto", cmap=_TRACE_CMAPS.get(kind, "viridis"), interpolation="nearest",
                       vmin=min(result.corrupted, float(grid.min())), vmax=max(result.clean, float(grid.max())))
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        _layer_ticks(ax, result.layers)
        ax.set_title(f"restore {_TRACE_NAMES.get(kind, kind)}\nclean p={result.clean:.3f}, "
                     f"corrupted p={result.corrupted:.3f}", fontsize=8)
        fig.colorbar(im, ax=ax).set_label(f"p({result.answer_token.strip()!r})", fontsize=7)
    fig.suptitle(f"causal trace: {result.prompt!r} -> {result.answer!r} (noise {result.noise}σ, "
                 f"{result.samples} samples, window {result.window})", fontsize=9)
    return _save(plt, fig, path)


def trace_aggregate_heatmap(aggregate, path: str | Path) -> Path:
    """Mean recovery per token role (a `TraceAggregate`): one panel per kind, six roles by layers."""
    plt, path = _pyplot(), _target(path)
    labels = [f"{r} (n={c})" for r, c in zip(aggregate.roles, aggregate.counts)]
    fig, axes = _trace_panels(plt, len(aggregate.kinds), len(labels), len(aggregate.layers))
    for ax, kind in zip(axes, aggregate.kinds):
        im = ax.imshow(aggregate.recovery[kind].numpy(), aspect="auto", cmap=_TRACE_CMAPS.get(kind, "viridis"),
                       interpolation="nearest")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        _layer_ticks(ax, aggregate.layers)
        ax.set_title(f"{_TRACE_NAMES.get(kind, kind)}\nmean clean p={aggregate.clean:.3f}, "
                     f"corrupted p={aggregate.corrupted:.3f}", fontsize=8)
        fig.colorbar(im, ax=ax).set_label("mean recovery", fontsize=7)
    fig.suptitle(f"causal trace over {len(aggregate.results)} facts ({aggregate.form} form"
                 f"{f', {len(aggregate.skipped)} skipped' if aggregate.skipped else ''})", fontsize=9)
    return _save(plt, fig, path)
