"""Leaderboard output (rich table, Markdown, CSV, JSON, a self-contained HTML page) and the PNG plots."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from harness.results import Row

COLUMNS = ("task", "strategy", "student", "teacher", "accuracy", "stderr", "n", "run")


def _cells(row: Row) -> list[str]:
    return [row.task, row.strategy, row.student, row.teacher, f"{100 * row.acc:.2f}",
            "" if row.stderr is None else f"{100 * row.stderr:.2f}", "" if row.n is None else str(row.n),
            ("paper: " + row.run) if row.reference else (f"{row.recipe}/{row.run}" if row.recipe else row.run)]


def rich_table(rows: Sequence[Row]) -> Table:
    table = Table(title="harness leaderboard (accuracy %, paper rows in italics)")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("accuracy", "stderr", "n") else "left", overflow="fold")
    for row in rows:
        table.add_row(*_cells(row), style="italic dim" if row.reference else None)
    return table


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = _cells(row)
        if row.reference:
            cells = [f"*{c}*" if c else c for c in cells]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, "reference"])
    for row in rows:
        writer.writerow([*_cells(row), "yes" if row.reference else ""])
    return out.getvalue()


def json_text(rows: Sequence[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2) + "\n"


# Plots ------------------------------------------------------------------------------------------------------

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_size(rows: Sequence[Row], path: Path) -> bool:
    """Accuracy vs student size (parameters), one line per strategy and task."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.parameters:
            series[f"{r.task} / {r.strategy}"].append((r.parameters, 100 * r.acc))
    return _lines(series, "student parameters", "accuracy (%)", "Accuracy vs student size", path, log_x=True)


def plot_diverse(rows: Sequence[Row], path: Path) -> bool:
    """Accuracy vs the number of diverse rationales D, one line per task and student."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.diverse_samples:
            series[f"{r.task} / {r.student}"].append((r.diverse_samples, 100 * r.acc))
    return _lines(series, "rationales per question (D)", "accuracy (%)", "Accuracy vs diverse samples", path,
                  log_x=True)


def plot_teacher(rows: Sequence[Row], path: Path) -> bool:
    """Teacher accuracy vs student accuracy, one point per (task, run)."""
    points = [(f"{r.task} / {r.run}", r.teacher_accuracy, r.acc) for r in rows if r.teacher_accuracy is not None]
    if not points:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, teacher, student in points:
        ax.scatter([100 * teacher], [100 * student])
        ax.annotate(label, (100 * teacher, 100 * student), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 100], [0, 100], color="grey", lw=0.5, ls="--")
    ax.set(xlabel="teacher accuracy on train (%)", ylabel="student test accuracy (%)",
           title="Teacher vs student accuracy", xlim=(0, 100), ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _lines(series, xlabel, ylabel, title, path: Path, log_x: bool) -> bool:
    if not series:
        return False
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# HTML -------------------------------------------------------------------------------------------------------

_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def html_page(rows: Sequence[Row], images: dict[str, bytes]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = _cells(row)
        sort_values = [cells[0], cells[1], cells[2], cells[3], f"{row.acc:.6f}", cells[5], cells[6], cells[7]]
        tds = "".join(f'<td data-v="{html.escape(v)}">{html.escape(c)}</td>' for c, v in zip(cells, sort_values))
        body.append(f'<tr class="{"reference" if row.reference else "result"}">{tds}</tr>')
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in images.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness leaderboard</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ cursor: pointer; background: #f0f0f0; }}
tr.reference td {{ font-style: italic; color: #666; }}
figure {{ display: inline-block; margin: 1em; }}
</style></head>
<body><h1>harness leaderboard</h1>
<p>{len([r for r in rows if not r.reference])} results; accuracy in %; italic rows are the Fine-tune-CoT paper's
numbers. Click a column to sort.</p>
<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{figures}
<script>{_SCRIPT}</script>
</body></html>
"""
