"""One process of a data-parallel run started by :func:`mlb.train.launch.launch_training`.

    python -m mlb.train.worker student request.json --summary summary.json [--resume]

torchrun runs this once per process; it reads the request, runs the recipe (which joins the
process group) and, on each machine's first process, writes the run's summary. A failure is
recorded for torchrun with this process's rank (:func:`mlb.train.distributed.record_failure`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlb.fileio import write_text_atomically
from mlb.train import RECIPES
from mlb.train.config import TrainSummary
from mlb.train.distributed import record_failure, world_from_environment
from mlb.train.launch import REQUEST_TYPES


def _write_summary(summary: TrainSummary, path: Path) -> None:
    """The summary as compact JSON, replaced whole: the launcher never reads a torn one."""
    write_text_atomically(path, summary.model_dump_json())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlb.train.worker")
    parser.add_argument("recipe", choices=sorted(REQUEST_TYPES))
    parser.add_argument("request", type=Path, help="the request as JSON")
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--stop-at-step", type=int, default=None)
    args = parser.parse_args(argv)
    world = world_from_environment()
    print(f"[rank {world.rank}/{world.size}] {args.recipe} run starting", flush=True)
    try:
        request = REQUEST_TYPES[args.recipe].model_validate_json(
            args.request.read_text(encoding="utf-8"))
        summary = RECIPES[args.recipe](request, resume=args.resume, overwrite=args.overwrite,
                                       stop_at_step=args.stop_at_step, progress=True)
    except Exception as error:  # noqa: BLE001 (every failure is reported for torchrun)
        message = record_failure(f"{type(error).__name__}: {error}")
        print(f"mlb train: error: {message}", file=sys.stderr)
        return 1
    if world.local_rank == 0:
        _write_summary(summary, args.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
