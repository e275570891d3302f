"""The command line's one progress bar: rich bars on stderr, created on the first update."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """Progress of a long command on stderr (stdout keeps the command's answer).

    One bar per task name, created on its first :meth:`update`; nothing is drawn before that,
    and nothing at all when ``enabled`` is False.

    Parameters
    ----------
    enabled
        False for ``--quiet`` (or when stderr is not a terminal, if the caller says so).
    counts
        Show ``done/total`` (frames, items); False shows a percentage (fractions).
    transient
        Remove the bars when stopped (True) or leave them on the screen. A transient bar is
        not drawn where stderr is not a terminal (nothing would remain of it but a blank line).
    """

    def __init__(self, *, enabled: bool = True, counts: bool = True, transient: bool = True):
        self.enabled = enabled
        self.counts = counts
        self.transient = transient
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def update(self, task: str, done: float, total: float, detail: str = "") -> None:
        """``done`` of ``total`` for ``task`` (its label; ``detail`` is shown after it)."""
        if not self.enabled:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TimeElapsedColumn,
            )

            console = Console(stderr=True)
            if self.transient and not console.is_terminal:
                # a transient bar on a log or a pipe shows nothing but leaves a blank line,
                # before an error line too ("one line on stderr", session 42)
                self.enabled = False
                return
            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn() if self.counts else TaskProgressColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=self.transient,
            )
            self._progress.start()
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        description = f"{task}: {detail}" if detail else task
        self._progress.update(
            self._tasks[task], completed=done, total=total, description=description
        )

    def stop(self) -> None:
        """Stop drawing (safe to call when nothing was drawn)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
