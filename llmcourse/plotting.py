"""Plotting helpers for the lessons (matplotlib only): attention heatmaps, per-head views and
reproduction-error bars.

Every helper takes tensors or arrays, checks that the labels match the data, and returns the
matplotlib object it drew on, so a lesson can add to the figure or save it.
"""

import math

import matplotlib.pyplot as plt
import numpy as np


def _to_numpy(weights, ndim: int) -> np.ndarray:
    """``weights`` (a tensor or array-like) as a float numpy array with exactly ``ndim`` dimensions."""
    if hasattr(weights, "detach"):  # a torch.Tensor, possibly requiring grad
        weights = weights.detach().cpu().numpy()
    array = np.asarray(weights, dtype=float)
    if array.ndim != ndim:
        raise ValueError(f"expected {ndim}-D weights, got shape {array.shape}")
    return array


def attention_heatmap(weights, tokens, ax=None, title=None, row_labels=None, annotate=False):
    """Draw attention weights as a heatmap: one row per query, one column per key token.

    ``weights`` is ``(n_rows, len(tokens))``; rows are labelled with ``row_labels`` (default: the
    tokens, for the usual square query x key matrix). The colour scale is fixed to [0, 1] so that
    heatmaps of different heads compare directly. ``annotate=True`` writes each weight in its cell
    (readable for small matrices). Returns the Axes.
    """
    w = _to_numpy(weights, 2)
    rows = list(tokens) if row_labels is None else list(row_labels)
    if w.shape != (len(rows), len(tokens)):
        raise ValueError(f"weights have shape {w.shape} but there are {len(rows)} row labels "
                         f"and {len(tokens)} tokens")
    if ax is None:
        cell = 0.65 if annotate else 0.45  # inches per cell: room for the numbers when annotating
        _, ax = plt.subplots(figsize=(cell * max(len(tokens), 6) + 1.5, cell * max(len(rows), 6) + 1),
                             layout="constrained")
    image = ax.imshow(w, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(tokens)), labels=list(tokens), rotation=60, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query" if row_labels is None else "")
    if annotate:
        for (i, j), value in np.ndenumerate(w):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 0.6 else "white")
    if title is not None:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def attention_heads_grid(weights_per_head, tokens, query_index=None, heads=None, titles=None,
                         ncols=4, suptitle=None):
    """One panel per head: a query x key heatmap, or, given ``query_index``, a bar chart of
    what that one query token attends to.

    ``weights_per_head`` is ``(n_heads, T, T)``; ``heads`` picks which heads to draw (default: all),
    ``titles`` names the panels (default ``"head h"``). Returns the Figure.
    """
    w = _to_numpy(weights_per_head, 3)
    tokens = list(tokens)
    if w.shape[1:] != (len(tokens), len(tokens)):
        raise ValueError(f"weights have shape {w.shape} but there are {len(tokens)} tokens")
    heads = list(range(w.shape[0])) if heads is None else list(heads)
    titles = [f"head {h}" for h in heads] if titles is None else list(titles)
    if len(titles) != len(heads):
        raise ValueError(f"{len(titles)} titles for {len(heads)} heads")
    if query_index is not None and not -len(tokens) <= query_index < len(tokens):
        raise IndexError(f"query_index {query_index} is out of range for {len(tokens)} tokens")

    ncols = min(ncols, len(heads))
    nrows = math.ceil(len(heads) / ncols)
    width = 0.3 * len(tokens) + 1.0
    height = 0.6 * width if query_index is not None else width
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    for ax, h, title in zip(axes.flat, heads, titles):
        if query_index is None:
            image = ax.imshow(w[h], vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_yticks(range(len(tokens)), labels=tokens, fontsize=8)
        else:
            row = w[h, query_index]
            colors = ["tab:blue"] * len(tokens)
            colors[int(row.argmax())] = "tab:orange"  # the most-attended key
            ax.bar(range(len(tokens)), row, color=colors)
            ax.set_ylim(0, 1)
        ax.set_xticks(range(len(tokens)), labels=tokens, rotation=60, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_title(title, fontsize=10)
    for ax in axes.flat[len(heads):]:
        ax.remove()
    if query_index is None:
        fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.02)
    else:
        fig.supylabel(f"weight from {tokens[query_index]!r}")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def _short(value: float) -> str:
    """A weight in at most three characters for a small cell: ".07", ".95", "1"."""
    if 0 <= value < 0.995:
        return f"{value:.2f}"[1:]
    return f"{value:.2g}"


def head_summary_heatmaps(summaries, ncols=3, annotate=True, suptitle=None):
    """One ``(layers x heads)`` heatmap per named summary, side by side, on a shared [0, 1] scale.

    ``summaries`` maps a panel title (e.g. ``"previous token"``) to an array ``(n_layers, n_heads)``
    of values in [0, 1], such as the mean weight each head puts on that pattern; ``annotate=True``
    writes each value in its cell. Returns the Figure.
    """
    if not summaries:
        raise ValueError("no summaries to draw")
    arrays = {name: _to_numpy(values, 2) for name, values in summaries.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"every summary needs the same (layers, heads) shape, got {sorted(shapes)}")
    n_layers, n_heads = shapes.pop()
    ncols = min(ncols, len(arrays))
    nrows = math.ceil(len(arrays) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.45 * n_heads * ncols + 1.5, (0.45 * n_layers + 1.2) * nrows),
                             squeeze=False, layout="constrained")
    for ax, (name, a) in zip(axes.flat, arrays.items()):
        image = ax.imshow(a, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(n_layers))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(name, fontsize=10)
        if annotate:
            for (i, j), value in np.ndenumerate(a):
                ax.text(j, i, _short(value), ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    for ax in axes.flat[len(arrays):]:
        ax.remove()
    fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.02)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def reproduction_error_bars(errors, labels, tolerance=None, ax=None, title=None):
    """Grouped bars of reproduction errors on a log scale: one group per label (e.g. per layer), one
    bar per named series in ``errors`` (``{"this layer alone": [...], ...}``, each as long as
    ``labels``), with each bar's value written above it and an optional dashed ``tolerance`` line.
    Returns the Axes."""
    series = {name: np.asarray(values, dtype=float) for name, values in errors.items()}
    labels = list(labels)
    if not series:
        raise ValueError("no errors to draw")
    for name, values in series.items():
        if values.shape != (len(labels),):
            raise ValueError(f"{name!r} has {values.size} values for {len(labels)} labels")
        if (values <= 0).any():
            raise ValueError(f"{name!r} has values <= 0, which a log scale cannot show")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(labels) * len(series) + 2), 4), layout="constrained")
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        positions = np.arange(len(labels)) + (k - (len(series) - 1) / 2) * width
        bars = ax.bar(positions, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.1e}" for v in values], fontsize=7, padding=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels=labels)
    ax.set_ylabel("max |ours - reference|")
    if tolerance is not None:
        ax.axhline(tolerance, color="tab:red", linestyle="--", label=f"tolerance {tolerance:g}")
    top = max(max(v.max() for v in series.values()), tolerance or 0.0)
    ax.set_ylim(min(v.min() for v in series.values()) / 10, top * 10)
    ax.legend(loc="upper left", fontsize=8)
    if title is not None:
        ax.set_title(title)
    return ax
