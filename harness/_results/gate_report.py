"""``harness compare`` as a small report (Markdown for CI logs and pull requests, a self-contained HTML page):
per run and task the baseline and the candidate, the change, the noise band it is judged against, and the verdict
the exit code gives."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from harness._results.gate import Comparison

MARKS = {"regression": "REGRESSION", "missing": "MISSING", "improvement": "improvement",
         "within noise": "within noise"}
"""Words, not emoji: a report must read the same where no emoji font is installed (CI logs, terminals)."""


def compare_cell(mean: float | None, seeds: int, stderr: float | None) -> str:
    if mean is None:
        return "missing"
    if seeds > 1:
        return f"{100 * mean:.1f} ({seeds} seeds)"
    return f"{100 * mean:.1f}" + (f" ± {100 * stderr:.1f}" if stderr is not None else "")


def method_text(c: Comparison) -> str:
    if c.method == "paired" and c.lost is not None:
        return f"paired ({c.lost} lost, {c.gained} gained)"
    return {"seeds": "spread between seeds", "stderr": "binomial stderr"}.get(c.method, c.method)


def _rows(found: Sequence[Comparison], marks: bool = True) -> list[list[str]]:
    return [[c.key, compare_cell(c.baseline_mean, c.baseline_seeds, c.baseline.stderr),
             "missing" if c.candidate is None else compare_cell(c.candidate_mean, c.candidate_seeds,
                                                                c.candidate.stderr),
             "" if c.delta is None else f"{100 * c.delta:+.1f}", f"±{100 * c.noise:.1f}", method_text(c),
             MARKS[c.verdict] if marks else c.verdict] for c in found]


HEADER = ["run / task", "baseline", "candidate", "change (points)", "noise band", "method", "verdict"]


def rich_table(found: Sequence[Comparison], title: str) -> Table:
    """The same rows and header as the Markdown and HTML reports, the verdict coloured for the terminal."""
    colour = {"regression": "red", "missing": "red", "improvement": "green", "within noise": ""}
    table = Table(title=title)
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("run / task", "method", "verdict") else "right",
                         overflow="fold")
    for c, cells in zip(found, _rows(found, marks=False)):
        verdict = cells[-1].upper() if c.verdict != "within noise" else cells[-1]
        table.add_row(*cells[:-1], f"[{colour[c.verdict]}]{verdict}[/]" if colour[c.verdict] else verdict)
    return table


def _summary(found: Sequence[Comparison]) -> str:
    bad = [c for c in found if c.regression]
    return (f"**{len(bad)} regression{'s' if len(bad) != 1 else ''}** in {len(found)} results (exit code 1)" if bad
            else f"No regression in {len(found)} results (exit code 0)")


def compare_markdown(found: Sequence[Comparison], title: str, about: Sequence[str] = ()) -> str:
    lines = [f"### {title}", "", *[f"- {line}" for line in about], *([""] if about else []), _summary(found), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _rows(found)]
    return "\n".join(lines) + "\n"


def compare_html(found: Sequence[Comparison], title: str, about: Sequence[str] = ()) -> str:
    colour = {"regression": "#fde2e2", "missing": "#fde2e2", "improvement": "#e2f6e2", "within noise": "#ffffff"}
    body = "".join(
        f"<tr style='background:{colour[c.verdict]}'>" + "".join(f"<td>{html.escape(x)}</td>" for x in cells)
        + "</tr>" for c, cells in zip(found, _rows(found)))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    summary = html.escape(_summary(found).replace("**", ""))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,th:first-child,"
            "td:nth-child(6),td:nth-child(7){text-align:left}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>"
            + "".join(f"<p class='about'>{html.escape(line)}</p>" for line in about) +
            f"<p id='summary'>{summary}</p><table id='compare'><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table></body></html>\n")


def render(path: Path, found: Sequence[Comparison], title: str, about: Sequence[str] = ()) -> str:
    """The report for ``path``: a small HTML page (``FILE.html``) or Markdown (any other name), with ``about``
    (the two folders, their commits and dates, warnings) under the title."""
    return compare_html(found, title, about) if path.suffix == ".html" else compare_markdown(found, title, about)

