"""The models the course discusses, each number with its source, and the parameter-growth plot of lesson 01.

``model_timeline.csv`` (package data) has one row per model. ``source`` is the model's own paper or
report; ``date`` is its date (arXiv v1 where there is an arXiv id, else the report or release).
Every number names where it comes from: ``parameters_source`` and ``tokens_source`` say "paper" when
the model's own paper states it, and otherwise name the other source (another paper, a model card,
a code release) or say "derived:" with the schedule it is computed from (steps x sequences x tokens).
``training_tokens`` is NaN where no source gives a total (``tokens_source`` then starts with
"not stated"). ``notes`` records earlier announcements and other context.

ULMFiT (Howard & Ruder 2018, arXiv:1801.06146) is discussed in the lesson but is not in the table:
it is an LSTM, not a transformer, and its paper does not state a parameter count.
"""

from importlib.resources import files

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

FAMILIES = ("encoder", "decoder", "encoder-decoder")
FAMILY_COLORS = {"encoder": "tab:blue", "decoder": "tab:orange", "encoder-decoder": "tab:green"}
MARKERS = {False: "o", True: "*"}  # dense, sparse (mixture of experts)
MARKER_SIZES = {False: 50, True: 180}  # points^2: the star needs more area to look as big
# where a label may go, relative to its point (points): right, left, above, below, then further out
LABEL_OFFSETS = [(6, -3), (-6, -3), (0, 7), (0, -13), (7, 7), (7, -12), (-7, 7), (-7, -12),
                 (10, 16), (10, -22), (-10, 16), (-10, -22), (0, 22), (0, -28), (14, 28), (14, -34),
                 (-14, 28), (-14, -34)]
POINT_RADIUS_PX = 6  # labels keep this far from every marker


def model_timeline() -> pd.DataFrame:
    """The timeline table, sorted by date: dates as Timestamps, parameters as int, tokens as float."""
    df = pd.read_csv(files("llmcourse").joinpath("model_timeline.csv"), parse_dates=["date"],
                     dtype={"parameters": "int64", "training_tokens": "float64", "sparse": "bool",
                            "open_weights": "bool"}, keep_default_na=False, na_values={"training_tokens": [""]})
    return df.sort_values("date", kind="stable").reset_index(drop=True)


def _label_box(ax, renderer, x, y, text, offset):
    """Draw a label at ``offset`` points from (x, y) and return it with its display-space extent."""
    dx, dy = offset
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va="bottom",
                        fontsize=8, annotation_clip=False,
                        arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=4)
                        if abs(dy) > 15 else None)
    return label, label.get_window_extent(renderer).expanded(1.04, 1.4)


def _overlap(box, boxes) -> float:
    """Total area (pixels^2) that ``box`` shares with ``boxes``."""
    total = 0.0
    for other in boxes:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        total += max(w, 0) * max(h, 0)
    return total


def _place_labels(ax, xs, ys, texts):
    """Label every point, each at the first offset whose text overlaps no earlier label, no marker, not
    the legend, and stays inside the axes (else at the offset with the least overlap). Greedy, in order."""
    ax.figure.draw_without_rendering()  # run the layout first, so the axes do not move under the labels
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    obstacles = [Bbox.from_extents(px - POINT_RADIUS_PX, py - POINT_RADIUS_PX, px + POINT_RADIUS_PX,
                                   py + POINT_RADIUS_PX) for px, py in points]
    if ax.get_legend() is not None:
        obstacles.append(ax.get_legend().get_window_extent(renderer))
    placed = []
    for x, y, text in zip(xs, ys, texts):
        best = None
        for offset in LABEL_OFFSETS:
            label, box = _label_box(ax, renderer, x, y, text, offset)
            outside = box.width * box.height - _overlap(box, [inside])
            cost = _overlap(box, placed + obstacles) + 10 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        placed.append(best[2])


def plot_parameter_growth(df: pd.DataFrame, ax=None):
    """Parameters (log scale) against date: colour = family, star = sparse mixture of experts.

    One point per row of ``df`` (as returned by ``model_timeline()``), each labelled with its name.
    Returns the Axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 6.5), layout="constrained")
    dates = _date_numbers(df["date"])
    for (family, sparse), group in df.groupby(["family", "sparse"], sort=False):
        ax.scatter(_date_numbers(group["date"]), group["parameters"], s=MARKER_SIZES[sparse],
                   marker=MARKERS[sparse], color=FAMILY_COLORS[family], edgecolor="black", linewidth=0.5,
                   zorder=3)
    ax.set_yscale("log")
    ax.xaxis_date()
    span = dates.max() - dates.min()
    ax.set_xlim(dates.min() - 0.06 * span, dates.max() + 0.1 * span)
    low, high = df["parameters"].min(), df["parameters"].max()
    ax.set_ylim(low / 3, high * 4)
    ax.set_xlabel("date of the paper (or release)")
    ax.set_ylabel("parameters (log scale)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: human_count(value)))
    ax.set_title("Parameters of language models, 2017-2022")
    ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=8, color=FAMILY_COLORS[f],
                      markeredgecolor="black", label=f) for f in FAMILIES]
    handles += [Line2D([], [], linestyle="", marker=MARKERS[s], markersize=12 if s else 8, color="0.8",
                       markeredgecolor="black", label=label)
                for s, label in [(False, "dense"), (True, "sparse (mixture of experts)")]]
    ax.legend(handles=handles, loc="upper left", fontsize=9)
    _place_labels(ax, dates, df["parameters"].to_numpy(dtype=float), df["name"])
    return ax


def human_count(n: float) -> str:
    """A count with an SI-style suffix: 110000000 -> '110M', 1.2e12 -> '1.2T'."""
    for scale, suffix in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]:
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _date_numbers(dates) -> np.ndarray:
    """Timestamps as matplotlib date numbers (days), for arithmetic on the x axis."""
    return mdates.date2num(pd.to_datetime(dates).to_numpy())


# ---------------------------------------------------------------- what a training run costs (lesson 01, section 4)
# Exercise plan_training runs this reasoning backwards (from a cluster and days to tokens): it forbids these helpers.

SECONDS_PER_DAY = 86_400


def dense_training_flops(n_params, n_tokens) -> float:
    """Kaplan et al.'s C ~ 6 N D: a forward pass of 2 FLOPs per parameter and token (a multiply and an add),
    and a backward pass of twice that."""
    forward = 2.0 * n_params * n_tokens
    return forward + 2 * forward


def days_to_train(flops, n_devices, peak_flops, utilisation) -> float:
    """Wall-clock days that ``flops`` take on ``n_devices`` sustaining ``utilisation`` of ``peak_flops`` each."""
    sustained = n_devices * peak_flops * utilisation  # FLOP/s
    return flops / sustained / SECONDS_PER_DAY


def implied_utilisation(flops, n_devices, peak_flops, days) -> float:
    """The share of the devices' peak that a run of ``flops`` in ``days`` on ``n_devices`` sustained."""
    return days_to_train(flops, n_devices, peak_flops, 1.0) / days


def pretraining_costs(runs, peak_flops: dict, utilisation: float, utilisation_range: tuple) -> pd.DataFrame:
    """One row per run ``(name, parameters, tokens)``: its 6ND FLOPs, then for each device of ``peak_flops``
    (``{"V100": FLOP/s, ...}``) the device-days at ``utilisation``; for the first device also the range of
    device-days over ``utilisation_range`` (``(high, low)``), as text."""
    table = pd.DataFrame(runs, columns=["model", "N", "D (tokens)"]).set_index("model")
    table["FLOPs"] = [dense_training_flops(n, d) for n, d in zip(table["N"], table["D (tokens)"])]
    for k, (device, peak) in enumerate(peak_flops.items()):
        table[f"{device}-days @{utilisation:.0%}"] = days_to_train(table["FLOPs"], 1, peak, utilisation)
        if k == 0:
            high, low = (days_to_train(table["FLOPs"], 1, peak, u) for u in utilisation_range)
            table[f"{device}-days @{utilisation_range[0]:.0%}..{utilisation_range[1]:.0%}"] = [
                f"{a:,.0f} .. {b:,.0f}" for a, b in zip(high, low)]
    return table
