"""`python -m vibe_plan` runs the `vibe` command line."""

from vibe_plan.launch import run

if __name__ == "__main__":  # not again in a process a worker pool spawns (it imports __main__)
    run()
