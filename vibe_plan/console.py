"""Terminal output shared by the commands: rich tables on stdout, progress only on a TTY."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


def _tty(stream: object) -> bool:
    """A terminal? A stream the shell closed (`>&-`) is None."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; logs are read wide.
console = Console(highlight=False, width=None if _tty(sys.stdout) else 120)
err_console = Console(stderr=True, highlight=False, width=None if _tty(sys.stderr) else 120)


def interactive(quiet: bool = False) -> bool:
    """Progress bars only for a person at a terminal: not with --quiet, in CI or in a pipe."""
    return not quiet and _tty(sys.stderr) and not os.environ.get("CI")


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", soft_wrap=True)


@contextmanager
def progress(quiet: bool = False) -> Iterator[object]:
    """A rich Progress on a TTY, else an object whose methods do nothing."""
    if interactive(quiet):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as p:
            yield p
    else:
        yield _SilentProgress()


class _SilentProgress:
    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def advance(self, *args: object, **kwargs: object) -> None:
        pass

    def update(self, *args: object, **kwargs: object) -> None:
        pass


@contextmanager
def token_progress(label: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A callback `(done, total)` drawing a bar with tokens/s on a terminal, else doing nothing."""
    if not interactive(quiet):
        yield lambda done, total: None
        return
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    start = time.perf_counter()
    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} tokens"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as p:
        task = p.add_task(label, total=None, rate="")

        def show(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            p.update(task, completed=done, total=total, rate=f"{rate:,.0f} tokens/s")

        yield show
