"""The `vibe` command line: a thin Typer layer; each command calls one library function.

`main` owns the process-level rules (docs/design.md, Conventions): a user error, a usage error
(unknown option, a word for a number, a missing argument) and an interrupt each end in one
`error:` line on stderr; SIGTERM is handled like Ctrl-C; a reader that closes stdout early
(`vibe solve ... | head -1`) only cuts the report short.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from vibe_plan import stop
from vibe_plan.commands.evaluate import evaluate
from vibe_plan.commands.profile_gpus import profile_gpus
from vibe_plan.commands.recalibrate import recalibrate
from vibe_plan.commands.report import report
from vibe_plan.commands.routing import import_routing, profile_routing
from vibe_plan.commands.simulate import simulate
from vibe_plan.commands.solve import solve
from vibe_plan.commands.validate import validate
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
app.command("recalibrate")(recalibrate)
app.command("validate")(validate)
app.command("report")(report)
app.command("simulate")(simulate)

# Click's exceptions, wherever this typer keeps them (its own copy of click, or click itself).
_clicks = sys.modules[typer.BadParameter.__module__]
_ClickException: type[Exception] = _clicks.ClickException
_UsageError: type[Exception] = _clicks.UsageError
_NoArgsIsHelp: type[Exception] = getattr(
    _clicks, "NoArgsIsHelpError", type("_Never", (Exception,), {})
)

# Exit codes of a run ended by a signal, as a shell reports a process killed by it (128 + n).
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs (worker
    processes stopped, temporary files removed, no output file written)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit code. User and usage errors print one `error:` line and
    return 2; SIGINT returns 130 and SIGTERM 143, with one `error:` line."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with _pipe_safe_streams(), _stop_signals() as received:
        before = _written_count()
        try:
            _check_file_outputs(args)
            command = typer.main.get_command(app)
            with command.make_context("vibe", args) as ctx:
                command.invoke(ctx)
        except BaseException as e:
            # Whatever a signal turned into on its way out (an extension module's import can
            # make an ImportError of it), the run was interrupted.
            if received or isinstance(e, (KeyboardInterrupt, typer.Abort)):
                term = signal.SIGTERM in received or isinstance(e, Terminated)
                return _interrupted(before, EXIT_SIGTERM if term else EXIT_SIGINT)
            return _failed(e, args)
        if received:  # a library swallowed the interrupt and the run went on: say so
            return _interrupted(before, EXIT_SIGTERM if signal.SIGTERM in received else EXIT_SIGINT)
    return 0


# Options that name an output FILE (vibe report's --out is a folder). Typer hands commands a Path,
# which drops a trailing slash, so `--out newdir/` would write a file named newdir: refuse here.
_FILE_OUTPUTS = {"--out", "-o", "--csv", "--moves-out", "--export"}


def _check_file_outputs(args: list[str]) -> None:
    if args and args[0] == "report":
        return
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            name, eq, value = "-o", "=", arg[2:]  # -oPATH: the short option with its value
        if name in _FILE_OUTPUTS and not eq and i + 1 < len(args):
            value = args[i + 1]
        elif name not in _FILE_OUTPUTS:
            continue
        path = value.partition("=")[2] if name == "--export" else value
        if path.endswith(("/", os.sep)):
            raise VibeError(f"{name} {value} names a folder; give a file name")


def _failed(e: BaseException, args: list[str]) -> int:
    """The exit code for an exception that ended a command, after its one `error:` line."""
    if isinstance(e, typer.Exit):  # --help, or a command's own typer.Exit
        return e.exit_code
    if isinstance(e, _NoArgsIsHelp):
        return 2  # `vibe` alone: the help is already printed
    if isinstance(e, _UsageError):
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "vibe"
        if where == "vibe" and args and args[0] in {c.name for c in app.registered_commands}:
            where = f"vibe {args[0]}"
        print(f"error: {_click_message(e)}; see {where} --help", file=sys.stderr)
        return 2
    if isinstance(e, _ClickException):
        print(f"error: {_click_message(e)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if isinstance(e, VibeError):
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, ModuleNotFoundError):
        root = (e.name or "").split(".")[0]
        if root in _HEAVY:
            extra = "gpu" if "profile-gpus" in args else "report" if "report" in args else "routing"
            print(
                f"error: this command needs {root}, which the light core does not install; "
                f"run: pip install 'vibe-plan[{extra}]'",
                file=sys.stderr,
            )
            return 2
    raise e


def _interrupted(before: int, code: int) -> int:
    written = _written_since(before)
    done = f"{', '.join(written)} had already been written" if written else "nothing was written"
    print(f"error: interrupted; {done}", file=sys.stderr)
    return code


# Heavy dependencies of the profiling commands and the report; solve and evaluate need none.
_HEAVY = {"torch", "pynvml", "transformers", "safetensors", "tokenizers", "matplotlib"}


def _click_message(e: Exception) -> str:
    """Click's message as one line in the `error:` style: lower-case start, no final period."""
    text = " ".join(e.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def _written_count() -> int:
    io = sys.modules.get("vibe_plan.artifacts.io")  # not imported: nothing written yet
    return len(io.paths_written()) if io is not None else 0


def _written_since(before: int) -> list[str]:
    io = sys.modules.get("vibe_plan.artifacts.io")
    return [str(p) for p in io.paths_written()[before:]] if io is not None else []


@contextmanager
def _stop_signals() -> Iterator[set[int]]:
    """While a command runs, SIGTERM raises Terminated and SIGINT KeyboardInterrupt in the main
    thread; yields the set of signals received. A SIGINT that is ignored stays ignored."""
    received: set[int] = set()
    stop.clear()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: Any) -> None:
        received.add(signum)
        stop.request(signum)  # writers check it: an exception raised here can be swallowed
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    old_term = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.getsignal(signal.SIGINT)
    if old_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_signal)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if old_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, old_int)


class _PipeSafe:
    """A text stream that becomes a sink when it cannot be written: its reader went away
    (`vibe solve ... | head -1`: Python ignores SIGPIPE, so BrokenPipeError) or its device is full
    or failing (`> /dev/full`). The rest of the report is dropped, the run goes on, writes its
    files and exits as it would have (0 on success, 2 after an `error:` line)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        if not self._closed:
            try:
                return self._stream.write(text)
            except OSError:  # EPIPE, ENOSPC, EIO
                self._sink()
        return len(text)

    def flush(self) -> None:
        if not self._closed:
            try:
                self._stream.flush()
            except OSError:
                self._sink()

    def _sink(self) -> None:
        self._closed = True
        try:  # later writes and the final flush at exit go to /dev/null, not to the dead pipe
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _pipe_safe_streams() -> Iterator[None]:
    old_out, old_err = sys.stdout, sys.stderr
    # A stream the shell closed (`>&-`, `2>&-`) is None here: write into nothing instead.
    out = old_out if old_out is not None else open(os.devnull, "w")  # noqa: SIM115
    err = old_err if old_err is not None else open(os.devnull, "w")  # noqa: SIM115
    sys.stdout, sys.stderr = _PipeSafe(out), _PipeSafe(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
