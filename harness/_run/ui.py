"""Terminal output: a rich progress bar per stage, a one-line summary each, and the final table."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from harness.secrets import redact


class Trouble(str):
    """A part of a stage summary that reports trouble (failed requests, data left out, test questions also in
    train): shown in yellow. The stage says so by the part's type, not by its wording."""


def stdout_console() -> Console:
    """The console for results: the terminal's width, or a wide fixed one when piped (so nothing is cut)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


class UI:
    def __init__(self, console: Console | None = None, out: Console | None = None):
        self.console = console or Console(stderr=True)
        """Progress and stage summaries (stderr)."""
        self.out = out or stdout_console()
        """Results (stdout)."""

    @contextlib.contextmanager
    def stage(self, label: str, total: int | None) -> Iterator[Callable[..., None]]:
        """A progress bar while the stage runs (with the time left when the total is known, and the note the
        stage last gave: ``advance(0, note="loss 0.71")``), gone when it ends; nothing when the output is not a
        terminal (a log file gets the summary lines only)."""
        if not self.console.is_terminal:
            yield lambda n=1, note=None: None
            return
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("[dim]eta[/dim]"),
                        TimeRemainingColumn()]
        else:
            columns.append(TimeElapsedColumn())
        columns.append(TextColumn("{task.fields[note]}"))
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(label, total=total, note="")

            def advance(n: int = 1, note: str | None = None) -> None:
                progress.update(task, advance=n, **({"note": escape(note)} if note is not None else {}))

            yield advance

    def done(self, label: str, parts: Sequence[str], seconds: float) -> None:
        """A finished stage: its summary's parts (plain text, no markup), joined by ``;``, ``Trouble`` parts in
        yellow."""
        shown = [f"[yellow]{escape(redact(p))}[/yellow]" if isinstance(p, Trouble) else escape(redact(p))
                 for p in parts]
        self.console.print(f"[green]✓[/green] [bold]{label:<22}[/bold] {'; '.join(shown)} "
                           f"[dim]({seconds:.1f} s)[/dim]")

    def skipped(self, label: str, summary: str) -> None:
        self.console.print(f"[dim]• {label:<22} up to date: {escape(redact(summary))}[/dim]")

    def note(self, text: str) -> None:
        """A line with rich markup (the harness's own); secrets the run knows of are masked."""
        self.console.print(redact(text))

    def results_table(self, title: str, rows: Mapping[str, Mapping[str, Any]]) -> Table:
        """The run's results; on a narrow terminal (under 90 columns) the accuracy, its stderr and n only, so
        that no header or number is broken over lines."""
        wide = self.out.width >= 90
        table = Table(title=title)
        table.add_column("run", overflow="fold")
        table.add_column("student", overflow="fold")
        columns = ("accuracy", "± stderr", "contains answer", "correct format", "n") if wide else \
            ("accuracy", "±", "n")
        for col in columns:
            table.add_column(col, justify="right", no_wrap=True)
        for name, r in rows.items():
            cells = [f"{100 * r['acc']:.1f}%", f"{100 * r['acc_stderr']:.1f}"]
            if wide:
                cells += [f"{100 * r['contains_answer']:.1f}%", f"{100 * r['correct_format']:.1f}%"]
            table.add_row(name, r["student"], *cells, str(r["n"]))
        return table
