"""The leaderboard's plots: one small panel per task (faceted), the legend outside every panel, labels collected
in the legend rather than written beside points (so none can overlap), your runs in colour and reference rows
(the paper's) in hollow grey, each series with its own marker, colours and markers fixed per series (the same in
every call). A line joins only the points of one configuration. Drawn with matplotlib as SVG (text kept as text,
every panel and legend carrying an id, so a browser test can read their boxes) or PNG.

- ``accuracy vs student size``: x = student parameters; a line per strategy;
- ``accuracy vs diverse samples``: x = rationales per question D; a line per student;
- ``accuracy vs teacher cost``: x = what the teach stage cost; a line per strategy;
- ``teacher vs student accuracy``: a point per run, with the y = x line (above it: the student surpassed its
  teacher).
"""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from harness._results.rows import Row, compact

Series = dict[str, list[tuple[float, float, bool, str]]]
"""label -> [(x, accuracy %, reference?, recipe)]: a line joins the points of one recipe only."""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG
    matplotlib.rcParams["svg.hashsalt"] = "harness"  # stable ids
    import matplotlib.pyplot as plt

    return plt


def _mean_points(points: list[tuple[float, float, bool, str]]) -> dict[str, list[tuple[float, float, bool]]]:
    """Per recipe, its seeds of one configuration (same x) averaged into one point."""
    by_x: dict[tuple[str, float, bool], list[float]] = defaultdict(list)
    for x, y, ref, recipe in points:
        by_x[(recipe, x, ref)].append(y)
    out: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
    for (recipe, x, ref), ys in sorted(by_x.items()):
        out[recipe].append((x, statistics.fmean(ys), ref))
    return out


def _ticks(ax, values: list[float], fmt: Callable[[float], str]) -> None:
    """On a log axis, ticks at the values plotted, labelled plainly, at most four and each at least a fifth of
    the axis's span from the last (no minor-tick labels, which matplotlib would print on top of each other); the
    axis spans at least a factor of 4, so that two students of nearly one size are not drawn a panel apart."""
    from matplotlib.ticker import FixedLocator, NullLocator

    low, high = min(values), max(values)
    if high / low < 4:
        middle = math.sqrt(low * high)
        low, high = min(low, middle / 2), max(high, middle * 2)
    ax.set_xlim(low / 1.3, high * 1.3)
    span = math.log10(high * 1.3) - math.log10(low / 1.3)
    kept: list[float] = []
    for v in values:
        if not kept or math.log10(v) - math.log10(kept[-1]) >= span / 5:
            kept.append(v)
    kept = kept[:: math.ceil(len(kept) / 4)]
    ax.xaxis.set_major_locator(FixedLocator(kept))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(kept, [fmt(v) for v in kept])


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _stable(label: str, n: int) -> int:
    """The same index for the same label in every call and every plot."""
    import hashlib

    return int(hashlib.sha256(label.encode()).hexdigest(), 16) % n


def _styles(labels: list[str], colours: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """A colour and a marker per series: each label's own (from its name, so the same in every call), or the next
    one free where two labels of one figure would share it."""
    colour: dict[str, str] = {}
    marker: dict[str, str] = {}
    for label in labels:
        i = _stable(label, len(colours))
        taken = set(colour.values())
        while colours[i % len(colours)] in taken and len(taken) < len(colours):
            i += 1
        colour[label] = colours[i % len(colours)]
        j = _stable(label + "/marker", len(MARKERS))
        used = set(marker.values())
        while MARKERS[j % len(MARKERS)] in used and len(used) < len(MARKERS):
            j += 1
        marker[label] = MARKERS[j % len(MARKERS)]
    return colour, marker


def _facets(by_task: dict[str, Series], title: str, xlabel: str, log_x: bool, identity: bool = False,
            fmt_x: Callable[[float], str] = compact):
    """A figure with one panel per task; the legend to the right of all panels."""
    plt = _plt()
    tasks = sorted(by_task)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False)
    colours = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if str(c).lower() != "#7f7f7f"]  # grey: ref
    labels = sorted({label for series in by_task.values() for label in series})
    colour, marker = _styles(labels, colours)
    handles = {}
    for i, ax in enumerate(axes.flat):
        if i >= len(tasks):
            ax.set_visible(False)
            continue
        task = tasks[i]
        ax.patch.set_gid(f"plotarea-{i}")
        for label, points in sorted(by_task[task].items()):
            # a line only joins the points of one recipe: results of other recipes are points of the same colour
            for recipe_points in _mean_points(points).values():
                ref = recipe_points[0][2]
                style = dict(color="#888888", marker=marker[label], markerfacecolor="none", linestyle="--",
                             linewidth=1) if ref else dict(color=colour[label], marker=marker[label], linewidth=1.8)
                (line,) = ax.plot([p[0] for p in recipe_points], [p[1] for p in recipe_points], label=label,
                                  clip_on=False, **style)
                handles.setdefault(label, line)
        if identity:
            ax.plot([0, 100], [0, 100], color="#bbbbbb", linewidth=0.8, linestyle=":")
            ax.set_xlim(0, 100)
        if log_x:
            ax.set_xscale("log")
            _ticks(ax, sorted({p[0] for pts in by_task[task].values() for p in pts}), fmt_x)
        ax.set_ylim(0, 100)
        ax.set_title(task, fontsize=11)
        ax.set_xlabel(xlabel, fontsize=10)
        ax.set_ylabel("accuracy (%)", fontsize=10)
        ax.tick_params(labelsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    legend = fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                        fontsize=9, frameon=False, title="grey, hollow: reference" if any(
                            p[2] for s in by_task.values() for pts in s.values() for p in pts) else None,
                        title_fontsize=9)
    legend.set_gid("legend")
    return fig


def _render(fig, fmt: str) -> bytes:
    plt = _plt()
    out = io.BytesIO()
    fig.savefig(out, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return out.getvalue()


def _collect(rows: Sequence[Row], x: Callable[[Row], float | None], label: Callable[[Row], str]) -> dict[str, Series]:
    """Points per task and series (a label: a strategy, a student), each point knowing its recipe."""
    by_task: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        value = x(r)
        if value is not None and value > 0:
            name = label(r) + (" (paper)" if r.reference else "")
            by_task[r.task][name].append((value, 100 * r.acc, r.reference, "paper" if r.reference else r.recipe))
    return by_task


def size(rows: Sequence[Row]):
    by_task = _collect(rows, lambda r: r.parameters, lambda r: r.strategy)
    return _facets(by_task, "Accuracy vs student size", "student parameters", True) if by_task else None


def diverse(rows: Sequence[Row]):
    by_task = _collect([r for r in rows if not r.reference], lambda r: r.diverse_samples, lambda r: r.student)
    return _facets(by_task, "Accuracy vs diverse samples", "rationales per question (D)", True,
                   fmt_x=lambda x: f"{x:g}") if by_task else None


def cost(rows: Sequence[Row]):
    by_task = _collect([r for r in rows if not r.reference], lambda r: r.teacher_cost, lambda r: r.strategy)
    return _facets(by_task, "Accuracy vs teacher cost", "teacher cost ($)", True,
                   fmt_x=lambda x: f"${x:.3g}") if by_task else None


def teacher(rows: Sequence[Row]):
    by_task: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r.reference and r.teacher_accuracy is not None:
            by_task[r.task][f"{r.strategy} · {r.student}"].append((100 * r.teacher_accuracy, 100 * r.acc, False,
                                                                    r.recipe))
    return _facets(by_task, "Teacher vs student accuracy (above the dotted line: the student surpassed its teacher)",
                   "teacher accuracy on train (%)", False, identity=True) if by_task else None


PLOTS = {"accuracy vs student size": size, "accuracy vs diverse samples": diverse,
         "accuracy vs teacher cost": cost, "teacher vs student accuracy": teacher}


def draw_all(rows: Sequence[Row], fmt: str = "svg") -> dict[str, bytes]:
    """Every plot the rows have data for, rendered as ``fmt`` (``svg`` or ``png``)."""
    out = {}
    for name, draw in PLOTS.items():
        fig = draw(rows)
        if fig is not None:
            out[name] = _render(fig, fmt)
    return out


def write_all(rows: Sequence[Row], folder: Path, fmt: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in draw_all(rows, fmt).items():
        path = folder / f"{name.replace(' ', '_')}.{fmt}"
        path.write_bytes(data)
        written.append(path)
    return written
