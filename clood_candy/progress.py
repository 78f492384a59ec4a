"""Progress bars for long steps (rich); silent with ``-q`` and when not on a terminal
unless asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bars


class Progress:
    """What a run says while it works: one-line messages and progress bars."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    def say(self, message: str, style: str | None = None) -> None:
        # markup off: messages hold user text (file names, captions) with brackets in it
        if not self.quiet:
            self.console.print(message, style=style, markup=False, highlight=False)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, note="")``."""
        if self.quiet:
            yield lambda n=1, note="": None
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
        with Bars(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total, note="")

            def advance(n: int = 1, note: str = "") -> None:
                bar.update(task_id, advance=n, note=note)

            yield advance
