"""The ``appmult-fx`` command line: one module per command group, each with ``register()``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module named here defines ``register(subparsers)``, which adds its sub-command(s) and
# sets ``func`` (a callable taking the parsed args and returning an exit code).
_COMMAND_MODULES = ["layers", "train", "lut", "export", "fp", "search"]

# exit codes: 0 success, 2 bad input or arguments, 3 a checkpoint that cannot be used
# (corrupted, truncated, another model's, or resumed with other arguments), 130 Ctrl-C, 141 the
# reader of the output closed it (`| head`; 128 + SIGPIPE, as a shell reports a process the
# signal ended)
EXIT_CHECKPOINT = 3
EXIT_CLOSED_OUTPUT = 141


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush at exit does not
    raise again into a closed pipe (the recipe of Python's ``signal`` documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="appmult-fx",
        description="Simulate, retrain and export networks whose multipliers are approximate.",
    )
    from ..version import __version__

    parser.add_argument("--version", action="version", version=f"appmult-fx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def console_main() -> int:
    """Entry point of the ``appmult-fx`` console script and ``python -m appmult_fx``: the
    process is ours, so its steps keep freed memory (:func:`appmult_fx.keep_freed_memory`;
    ``APPMULT_FX_KEEP_FREED_MEMORY=0`` opts out), then :func:`main`."""
    from ..allocator import keep_freed_memory

    try:
        keep_freed_memory()
    except ValueError as exc:
        print(f"appmult-fx: error: {exc}", file=sys.stderr)
        return 2
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit code. It leaves
    the process's allocator as it is (:func:`console_main` sets it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..app.checkpoint import CheckpointError

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, among the handlers, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed our output: nothing is wrong, nothing to say
        _stdout_to_devnull()
        return EXIT_CLOSED_OUTPUT
    except CheckpointError as exc:
        print(f"appmult-fx: checkpoint error: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except (ValueError, OSError, KeyError) as exc:
        print(f"appmult-fx: error: {exc}", file=sys.stderr)
        return 2
