"""Terminal output shared by the commands: rich tables on stdout, progress only on a TTY."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; logs are read wide.
_width = None if sys.stdout.isatty() else 120
console = Console(highlight=False, width=_width)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def interactive(quiet: bool = False) -> bool:
    """Progress bars only for a person at a terminal: not with --quiet, in CI or in a pipe."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


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
