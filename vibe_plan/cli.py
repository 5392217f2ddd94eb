"""The `vibe` command line: a thin Typer layer; each command calls one library function."""

from __future__ import annotations

import sys

import typer

from vibe_plan.commands.evaluate import evaluate
from vibe_plan.commands.profile_gpus import profile_gpus
from vibe_plan.commands.routing import import_routing, profile_routing
from vibe_plan.commands.solve import solve
from vibe_plan.errors import VibeError

app = typer.Typer(
    name="vibe",
    help="Hardware-aware expert placement for expert-parallel MoE inference (ViBE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("profile-gpus")(profile_gpus)
app.command("profile-routing")(profile_routing)
app.command("import-routing")(import_routing)
app.command("solve")(solve)
app.command("evaluate")(evaluate)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code. User errors print one `error:` line and return 2."""
    try:
        app(args=argv, prog_name="vibe", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except VibeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in _HEAVY:
            raise
        args = sys.argv[1:] if argv is None else argv
        extra = "gpu" if "profile-gpus" in args else "routing"
        print(
            f"error: this command needs {root}, which the light core does not install; "
            f"run: pip install 'vibe-plan[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return 0


# Heavy dependencies of the profiling commands; solve and evaluate need none of them.
_HEAVY = {"torch", "pynvml", "transformers", "safetensors", "tokenizers"}


def run() -> None:
    sys.exit(main())
