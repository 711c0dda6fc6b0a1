"""``mlb export``: a checkpoint as ONNX (opset 17, dynamic batch, height and width).

    mlb export --model runs/student.pt --out runs/student.onnx

The graph is checked against PyTorch with ONNX Runtime on a random input of another size
than the traced one; the largest difference is printed (mlb.export).
"""

from __future__ import annotations

import argparse

from mlb.cli.fields import threads_option

# Library imports happen in ``run``: building the ``mlb`` parser imports every subcommand
# module, and torch + onnx take seconds to import.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX and check it with ONNX Runtime",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--model", required=True, help="checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--weights", choices=("model", "ema"), default="model")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: mlb.export.DEFAULT_OPSET)")
    threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlb.export import export_onnx

    opset = {} if args.opset is None else {"opset": args.opset}
    report = export_onnx(args.model, args.out, weights=args.weights, **opset)
    height, width = report.check_shape[2:]
    print(f"{report.path}: opset {report.opset}, {report.size_bytes / 2**20:.1f} MiB; "
          f"ONNX Runtime vs PyTorch max |diff| {report.max_abs_diff:.2e} on {height}x{width}")
    return 0
