"""`python -m vibe_plan` runs the `vibe` command line."""

from vibe_plan.cli import run

run()
