"""The `vibe` entry point. It imports the command line inside the interrupt handling, so a Ctrl-C
in the first tenth of a second (while typer, rich and the commands load) ends like any other:
one `error:` line and exit code 130, not a traceback."""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from vibe_plan.cli import main as cli_main
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 128 + signal.SIGINT
    return cli_main(argv)


def run() -> None:
    sys.exit(main())
