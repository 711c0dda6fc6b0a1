"""``mlb evaluate``: score a checkpoint on images with true alphas (method.md section 3).

    mlb evaluate --model runs/student.pt --images val/img --alphas val/alpha \\
        --json runs/student.eval.json --grid runs/student.eval.png

Prints a markdown table of the mean metrics (whole image and boundary region) with the
evaluation conventions under it.
"""

from __future__ import annotations

import argparse
import sys

from mlb.evaluate import EvaluateRequest, evaluate_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="metrics of a checkpoint on a validation set",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    defaults = EvaluateRequest(model="-", images="-", alphas="-")
    parser.add_argument("--model", required=True, help="checkpoint (.pt)")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--alphas", required=True, help="folder of true alphas (same stems)")
    parser.add_argument("--json", default=None, help="write the full report (JSON) here")
    parser.add_argument("--grid", default=None,
                        help="write image | prediction | truth | error rows (PNG) here")
    parser.add_argument("--grid-rows", type=int, default=defaults.grid_rows)
    parser.add_argument("--short-side", type=int, default=defaults.short_side,
                        help="inference short side (default 512)")
    parser.add_argument("--weights", choices=("model", "ema"), default=defaults.weights)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = EvaluateRequest(
        model=args.model, images=args.images, alphas=args.alphas, short_side=args.short_side,
        weights=args.weights, grid_path=args.grid, grid_rows=args.grid_rows,
        json_path=args.json, batch_size=args.batch_size, device=args.device,
    )
    report = evaluate_checkpoint(request, progress=not args.quiet)
    print(report.table, end="")
    if report.grid:
        print(f"grid: {report.grid}", file=sys.stderr)
    return 0
