"""``mlb evaluate``: score a checkpoint on images with true alphas (method.md section 3).

    mlb evaluate --model runs/student.pt --images val/img --alphas val/alpha \\
        --json runs/student.eval.json --grid runs/student.eval.png

Prints a markdown table of the mean metrics (whole image and boundary region) with the
evaluation conventions under it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mlb.cli.fields import FieldHelpFormatter, inference_from_args, inference_options, option

if TYPE_CHECKING:
    from mlb.evaluate import EvaluateRequest

REQUEST = "mlb.evaluate:EvaluateRequest"

# Library imports happen where they are used: building the ``mlb`` parser imports every
# subcommand module, and torch + torchvision take seconds to import. Options left out (None)
# take EvaluateRequest's defaults.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="metrics of a checkpoint on a validation set",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=FieldHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint (.pt)")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--alphas", required=True, help="folder of true alphas (same stems)")
    parser.add_argument("--json", default=None, help="write the full report (JSON) here")
    parser.add_argument("--grid", default=None,
                        help="write image | prediction | truth | error rows (PNG) here")
    option(parser, "--grid-rows", REQUEST, "grid_rows", type=int, help="images in the grid")
    option(parser, "--weights", REQUEST, "weights", choices=("model", "ema"),
           help="score the weights or their EMA copy")
    inference_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def request_from_args(args: argparse.Namespace) -> EvaluateRequest:
    from mlb.evaluate import EvaluateRequest

    options = {"weights": args.weights, "grid_path": args.grid,
               "grid_rows": args.grid_rows, "json_path": args.json}
    return EvaluateRequest(
        model=args.model, images=args.images, alphas=args.alphas,
        inference=inference_from_args(args),
        **{key: value for key, value in options.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    from mlb.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(request_from_args(args), progress=not args.quiet)
    print(report.table, end="")
    if report.grid:
        print(f"grid: {report.grid}", file=sys.stderr)
    return 0
