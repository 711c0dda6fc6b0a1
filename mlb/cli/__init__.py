"""The ``mlb`` command line: one subcommand module per pipeline step.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed ``argparse.Namespace`` and returning an exit code.
Subcommands call the same library functions the Prefect flows call.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

COMMANDS: tuple[str, ...] = (
    # in pipeline order, as `mlb --help` lists them
    "synth", "relabel", "labels", "train", "checkpoint", "evaluate", "predict", "export",
    "reproduce", "bench",
)


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlb", description="Matte Label Blending and DDC training for human matting."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mlb.cli.{name}").register(subparsers)
    return parser


class _ProgressLines(logging.StreamHandler):
    """Prints the library's progress lines (logger ``mlb``, e.g. a training's step lines when
    no progress bar is shown) on stderr as ``mlb COMMAND: message``."""


def _show_progress_lines(command: str, *, quiet: bool) -> None:
    library = logging.getLogger("mlb")
    for handler in [h for h in library.handlers if isinstance(h, _ProgressLines)]:
        library.removeHandler(handler)  # main() may run more than once in one process
    handler = _ProgressLines(sys.stderr)
    handler.setFormatter(logging.Formatter(f"mlb {command}: %(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    library.addHandler(handler)
    library.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _show_progress_lines(args.command, quiet=bool(getattr(args, "quiet", False)))
        if getattr(args, "threads", None) is not None:
            from mlb.threads import use_threads

            use_threads(args.threads)
        return int(args.func(args) or 0)
    except (UsageError, ValueError, OSError) as error:
        # Expected failures (bad paths, bad values, file-system faults) get one clear line,
        # not a traceback.
        from mlb.cli.errors import error_line

        message = error_line(error)
        if "TORCHELASTIC_ERROR_FILE" in os.environ:  # one process of a torchrun job
            from mlb.train.distributed import record_failure

            message = record_failure(message)
        print(f"mlb {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is the user's decision, not a fault: one line, the shell's code for SIGINT.
        # What was finished before it (periodic checkpoints, committed label shards) stays;
        # the same command resumes from there.
        print(f"\nmlb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
