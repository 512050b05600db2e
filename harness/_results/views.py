"""Leaderboard tables in every format (terminal, Markdown, CSV, JSON, a self-contained HTML page), in two views:

- ``pivot`` (the Fine-tune-CoT paper's table shape): one column per task, one row per (strategy, student,
  teacher), the cell the accuracy (mean ± sd over seeds, or ± the binomial stderr for one seed), the best of your
  results per task marked; reference rows grouped apart: your baselines (vanilla runs, your teachers' accuracy
  on the training questions) and the paper's numbers, so each of your rows reads against them;
- ``flat``: one line per result, sortable.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table

from harness._results.rows import PAPER, PAPER_TASKS, Row, compact

COLUMNS = ("task", "strategy", "student", "teacher", "accuracy", "stderr", "maj@n", "n", "evaluation", "teacher cost",
           "run")
GROUPS = ("your runs", "your baselines", "Fine-tune-CoT paper (teacher text-davinci-002)")


# The flat view ----------------------------------------------------------------------------------------------

def _cells(row: Row) -> list[str]:
    return [row.task, row.strategy, row.student, row.teacher, f"{100 * row.acc:.2f}",
            "" if row.stderr is None else f"{100 * row.stderr:.2f}", "" if row.maj is None else f"{100 * row.maj:.2f}",
            "" if row.n is None else str(row.n), row.evaluation_label,
            "" if row.teacher_cost is None else f"${row.teacher_cost:.4g}",
            ("paper: " + row.run) if row.reference else (f"{row.recipe}/{row.run}" if row.recipe else row.run)]


def rich_table(rows: Sequence[Row]) -> Table:
    table = Table(title="harness leaderboard (accuracy %, paper rows in italics)")
    for col in COLUMNS:
        numeric = col in ("accuracy", "stderr", "maj@n", "n", "teacher cost")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
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


# The pivot view ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    acc: float
    """Mean over seeds (0-1)."""
    spread: float | None
    """Standard deviation over seeds when there are several, else the binomial stderr."""
    seeds: int
    best: bool = False

    def text(self) -> str:
        if self.spread is None:
            return f"{100 * self.acc:.1f}"
        return f"{100 * self.acc:.1f} ± {100 * self.spread:.1f}" + (f" ({self.seeds})" if self.seeds > 1 else "")


@dataclass
class PivotRow:
    group: str
    strategy: str
    student: str
    teacher: str
    cells: dict[str, Cell] = field(default_factory=dict)
    recipe: str = ""
    """Shown when runs of the same strategy, student and teacher come from several recipes (configurations)."""

    @property
    def label(self) -> str:
        text = " · ".join(x for x in (self.strategy, self.student, self.teacher) if x and x != "-")
        return f"{text} ({self.recipe})" if self.recipe else text


def _cell(rows: list[Row]) -> Cell:
    accs = [r.acc for r in rows]
    if len(accs) > 1:
        return Cell(statistics.fmean(accs), statistics.stdev(accs), len(accs))
    return Cell(accs[0], rows[0].stderr, 1)


def pivot(rows: Sequence[Row]) -> tuple[list[str], list[PivotRow]]:
    """The tasks (columns) and the rows of the pivot view, grouped: your runs, your baselines (vanilla runs and
    your runs' teachers), the paper's rows."""
    mine = {r.task for r in rows if not r.reference}  # your tasks first, then the paper's others
    tasks = sorted({r.task for r in rows}, key=lambda t: (t not in mine, t not in PAPER_TASKS, PAPER_TASKS.index(t)
                                                          if t in PAPER_TASKS else 0, t))
    found: dict[tuple[str, str, str, str, float | None], dict[str, list[Row]]] = {}
    teachers: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        group = GROUPS[2] if r.reference else GROUPS[1] if r.strategy == "vanilla" else GROUPS[0]
        teacher = r.teacher if not r.reference else ""
        size = None if r.reference else r.parameters  # two students of one name and another size: two rows
        found.setdefault((group, r.strategy, r.student, teacher, size), {}).setdefault(r.task, []).append(r)
        if not r.reference and r.teacher_accuracy is not None:
            teachers.setdefault(r.teacher, {}).setdefault(r.task, []).append(r.teacher_accuracy)
    sizes: dict[tuple[str, str, str, str], set] = {}
    for group, strategy, student, teacher, size in found:
        sizes.setdefault((group, strategy, student, teacher), set()).add(size)
    out = []
    for (group, strategy, student, teacher, size), by_task in found.items():
        # one row per configuration: a recipe's seeds average, and recipes for different tasks share a row; two
        # recipes with results for the same task are two configurations, a row each, named by recipe
        clash = any(len({r.recipe for r in rs}) > 1 for rs in by_task.values())
        parts: dict[str, dict[str, list[Row]]] = {}
        for task, rs in by_task.items():
            for r in rs:
                parts.setdefault(r.recipe if clash else "", {}).setdefault(task, []).append(r)
        sized = student + (f" {compact(size)}" if len(sizes[(group, strategy, student, teacher)]) > 1 and size
                           else "")
        out += [PivotRow(group, strategy, sized, teacher, {t: _cell(x) for t, x in cells.items()}, recipe)
                for recipe, cells in parts.items()]
    for teacher, by_task in teachers.items():
        out.append(PivotRow(GROUPS[1], "teacher (train questions)", teacher, "",
                            {t: Cell(statistics.fmean(v), None, 1) for t, v in by_task.items()}))
    labels = list(PAPER)
    paper_rank = {(v[1], v[0]): labels.index(k) for k, v in PAPER.items()}  # (strategy, student) -> paper's order
    order = {id(p): paper_rank.get((p.strategy, p.student), len(labels)) for p in out}
    out.sort(key=lambda p: (GROUPS.index(p.group), p.strategy != "vanilla" if p.group == GROUPS[1] else False,
                            order[id(p)] if p.group == GROUPS[2] else
                            -statistics.fmean(c.acc for c in p.cells.values()), p.label))
    for task in tasks:  # the best of your own results per task (your runs and your vanilla runs)
        mine = [p for p in out if p.group != GROUPS[2] and not p.strategy.startswith("teacher") and task in p.cells]
        if mine:
            top = max(p.cells[task].acc for p in mine)
            for p in mine:
                if p.cells[task].acc == top:
                    c = p.cells[task]
                    p.cells[task] = Cell(c.acc, c.spread, c.seeds, best=True)
    return tasks, out


def pivot_rich(rows: Sequence[Row], width: int | None = None) -> Table:
    """The pivot view for a terminal ``width`` columns wide: the labels kept whole, task names wrapped at their
    underscores, and the paper's tasks you did not run left out (said in the caption) where they would not fit."""
    tasks, prows = pivot(rows)
    label_width = min(40, max([len(p.label) for p in prows] + [12]))
    cell_width = max([len(c.text()) + 2 for p in prows for c in p.cells.values()] + [6])
    headers = {t: t if len(t) <= cell_width else _lines(t.split("_"), cell_width) for t in tasks}
    widths = {t: max(cell_width, *(len(line) for line in headers[t].split("\n"))) for t in tasks}
    hidden: list[str] = []
    if width:  # each column takes its width plus 3 (padding and a border), the table one more border
        mine = {r.task for r in rows if not r.reference}
        while len(tasks) > 1 and 1 + label_width + 3 + sum(widths[t] + 3 for t in tasks) > width and \
                tasks[-1] not in mine:
            hidden.append(tasks.pop())
    caption = (f"{len(hidden)} more of the paper's tasks in a wider terminal (or --format markdown)"
               if hidden else None)
    table = Table(title="harness leaderboard: accuracy % per task (★ best of yours; ± sd over seeds (n) or stderr)",
                  caption=caption)
    table.add_column("strategy · student · teacher", min_width=label_width, overflow="fold")
    for task in tasks:  # a long name on several lines, broken at its underscores; a cell fits its column
        table.add_column(headers[task], justify="right", min_width=widths[task])
    group = None
    for p in prows:
        if p.group != group:
            if group is not None:
                table.add_section()
            table.add_row(f"[bold]{p.group}[/bold]", *[""] * len(tasks))
            group = p.group
        table.add_row(p.label, *[("★ " if c.best else "") + c.text() if (c := p.cells.get(t)) else "–"
                                 for t in tasks],
                      style="italic dim" if p.group != GROUPS[0] else None)
    return table


def _lines(words: list[str], width: int) -> str:
    """Words joined with ``_`` into lines of at most ``width`` characters (a longer word on a line of its own)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += "_" + word
        else:
            lines.append(word if not lines else "_" + word)
    return "\n".join(lines)


def pivot_markdown(rows: Sequence[Row]) -> str:
    tasks, prows = pivot(rows)
    lines = ["| strategy · student · teacher | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    group = None
    for p in prows:
        if p.group != group:
            lines.append(f"| **{p.group}** |" + " |" * len(tasks))
            group = p.group
        cells = [(f"**{c.text()}**" if c.best else c.text()) if (c := p.cells.get(t)) else "–" for t in tasks]
        lines.append(f"| {p.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nAccuracy in %; bold: the best of your results per task; ± the standard " \
                              "deviation over seeds (their number in brackets) or the binomial stderr.\n"


def pivot_csv(rows: Sequence[Row]) -> str:
    tasks, prows = pivot(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "strategy", "student", "teacher",
                     *[f"{t}{suffix}" for t in tasks for suffix in ("", "_spread", "_seeds")]])
    for p in prows:
        values = []
        for t in tasks:
            c = p.cells.get(t)
            values += ["", "", ""] if c is None else [
                f"{100 * c.acc:.2f}", "" if c.spread is None else f"{100 * c.spread:.2f}", c.seeds]
        writer.writerow([p.group, p.strategy, p.student, p.teacher, *values])
    return out.getvalue()


# HTML -------------------------------------------------------------------------------------------------------

_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
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


def _flat_html(rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = _cells(row)
        sort_values = [*cells[:4], f"{row.acc:.6f}", *cells[5:]]  # one per column, numbers as numbers
        tds = "".join(f'<td data-v="{html.escape(v)}">{html.escape(c)}</td>' for c, v in zip(cells, sort_values))
        body.append(f'<tr class="{"reference" if row.reference else "result"}">{tds}</tr>')
    return (f'<table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _pivot_html(rows: Sequence[Row]) -> str:
    tasks, prows = pivot(rows)
    head = "<th>strategy · student · teacher</th>" + "".join(f'<th class="task">{html.escape(t)}</th>' for t in tasks)
    bodies, group, current = [], None, []
    for p in prows:
        if p.group != group:
            if current:
                bodies.append((group, current))
            group, current = p.group, []
        tds = "".join(f'<td class="{"best" if c.best else ""}">{html.escape(c.text())}</td>' if (c := p.cells.get(t))
                      else "<td>–</td>" for t in tasks)
        current.append(f"<tr><th scope='row'>{html.escape(p.label)}</th>{tds}</tr>")
    if current:
        bodies.append((group, current))
    body = "".join(
        f'<tbody class="{"mine" if g == GROUPS[0] else "reference"}"><tr class="group"><th colspan="{len(tasks) + 1}">'
        f"{html.escape(g)}</th></tr>{''.join(trs)}</tbody>" for g, trs in bodies)
    return f'<table id="pivot"><thead><tr>{head}</tr></thead>{body}</table>'


def html_page(rows: Sequence[Row], images: dict[str, bytes], table: str) -> str:
    """The page: a view's table, then the plots as inline SVG."""
    figures = "".join(
        f'<figure class="plot" data-name="{html.escape(name)}">{_inline_svg(data, f"fig{i}-")}'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for i, (name, data) in enumerate(images.items()))
    mine = len([r for r in rows if not r.reference])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness leaderboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; color: #222; max-width: 100%; }}
.scroll {{ overflow-x: auto; max-width: 100%; margin-bottom: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ddd; padding: 4px 10px; white-space: nowrap; }}
#pivot th[scope=row], #pivot thead th:first-child {{ position: sticky; left: 0; background: #fff; z-index: 1; }}
#pivot thead th:first-child {{ background: #f0f0f0; }}
thead th {{ background: #f0f0f0; }}
table.sortable th {{ cursor: pointer; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }}
th[scope=row] {{ text-align: left; font-weight: normal; }}
tr.group th {{ text-align: left; background: #fafafa; font-weight: 600; }}
tbody.reference td, tbody.reference th[scope=row], tr.reference td {{ font-style: italic; color: #777; }}
td.best {{ font-weight: 700; background: #eef7ee; }}
@media (max-width: 700px) {{
  body {{ margin: 0.5em; }}
  #pivot th[scope=row] {{ white-space: normal; min-width: 7em; max-width: 38vw; }}
}}
figure.plot {{ display: block; margin: 1em 0; }}
figure.plot svg {{ max-width: 100%; height: auto; }}
</style></head>
<body><h1>harness leaderboard</h1>
<p>{mine} results; accuracy in %. Your runs first; bold: the best of your results per task; reference rows (your
baselines, the Fine-tune-CoT paper) in grey italics.</p>
<div class="scroll">{table}</div>
{figures}
<script>{_SCRIPT}</script>
</body></html>
"""


def _inline_svg(data: bytes, prefix: str) -> str:
    """An SVG file as an element of the page, its ids prefixed so that several plots on one page never share one
    (matplotlib names clip paths by content)."""
    text = data.decode()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    return re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{prefix}{m.group(1)}"', text)


# The views, each one class ----------------------------------------------------------------------------------

FORMATS = ("table", "markdown", "csv", "json", "html")
"""What every view renders to: a terminal table, Markdown, CSV, JSON and a self-contained HTML page."""


class View:
    """A leaderboard view: how result rows become a table. A new view is one subclass added to ``VIEWS``;
    ``harness leaderboard --view NAME`` offers it with its ``help``."""

    name = ""
    help = ""

    def rich(self, rows: Sequence[Row]) -> Table:
        raise NotImplementedError

    def markdown(self, rows: Sequence[Row]) -> str:
        raise NotImplementedError

    def csv(self, rows: Sequence[Row]) -> str:
        raise NotImplementedError

    def html_table(self, rows: Sequence[Row]) -> str:
        raise NotImplementedError

    def json(self, rows: Sequence[Row]) -> str:
        return json_text(rows)

    def render(self, rows: Sequence[Row], fmt: str, images: dict[str, bytes] | None = None,
               width: int | None = None) -> Table | str:
        """The rows in ``fmt`` (one of ``FORMATS``); ``images`` are the plots an HTML page shows below the table;
        ``width`` the terminal's, for ``table``."""
        if fmt == "table":
            return self.rich(rows, width) if isinstance(self, PivotView) else self.rich(rows)
        if fmt == "html":
            return html_page(rows, images or {}, self.html_table(rows))
        return {"markdown": self.markdown, "csv": self.csv, "json": self.json}[fmt](rows)


class PivotView(View):
    name = "pivot"
    help = "one column per task, your runs above the reference rows (default)"

    def rich(self, rows, width: int | None = None):
        return pivot_rich(rows, width)

    def markdown(self, rows):
        return pivot_markdown(rows)

    def csv(self, rows):
        return pivot_csv(rows)

    def html_table(self, rows):
        return _pivot_html(rows)


class FlatView(View):
    name = "flat"
    help = "one line per result, sortable"

    def rich(self, rows):
        return rich_table(rows)

    def markdown(self, rows):
        return markdown(rows)

    def csv(self, rows):
        return csv_text(rows)

    def html_table(self, rows):
        return _flat_html(rows)


VIEWS: dict[str, View] = {v.name: v for v in (PivotView(), FlatView())}
DEFAULT_VIEW = "pivot"
