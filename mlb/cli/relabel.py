"""``mlb relabel``: a frozen teacher labels a segmentation corpus into a label version.

    mlb relabel --teacher runs/teacher.pt --images data/img --masks data/mask --store labels/

Prints the version id (``--json``: a summary with counts, quarantine and throughput). Killed
at any moment, the same command resumes where it stopped (``mlb.labels.relabel`` module docstring).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from mlb.cli.fields import FieldHelpFormatter, inference_from_args, inference_options, option

if TYPE_CHECKING:
    from mlb.labels.request import RelabelRequest

CONFIG = "mlb.labels.request:RelabelConfig"
INFERENCE = "mlb.labels.request:LabellingInference"

# Library imports happen in ``run``: building the ``mlb`` parser imports every subcommand
# module, and torch + torchvision take seconds to import.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "relabel", help="label a segmentation corpus with a frozen teacher (MLB, offline)",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=FieldHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (.pt)")
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--masks", required=True, help="folder of coarse masks (same stems)")
    parser.add_argument("--store", required=True, help="label store: folder or fsspec URL")
    # Options left out (None) take RelabelConfig's defaults.
    parser.add_argument("--blend", choices=("soft", "hard"), default=None,
                        help="soft (default): b = boundary probability; hard: b = 1[b > 0.5]")
    parser.add_argument("--band-px", type=int, default=None,
                        help="use the teacher only within K px of the mask edge")
    inference_options(parser, INFERENCE,
                      batch_help="images per teacher forward (part of the version id)")
    option(parser, "--shard-size", CONFIG, "shard_size", type=int, help="samples per shard")
    parser.add_argument("--store-teacher-alpha", action="store_true", default=None,
                        help="also keep the teacher's own alpha (for previews and analysis)")
    parser.add_argument("--skip-bad", action="store_true", default=None,
                        help="quarantine unreadable or unpaired files instead of failing")
    parser.add_argument("--weights", choices=("model", "ema"), default="model")
    option(parser, "--decode-threads", CONFIG, "decode_threads", type=int,
           help="threads decoding images ahead of the teacher")
    parser.add_argument("--corpus", default=None, help="corpus name (default: images folder)")
    parser.add_argument("--parent-version", default=None,
                        help="label version the teacher was trained on (lineage)")
    parser.add_argument("--ema-round", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def request_from_args(args: argparse.Namespace) -> RelabelRequest:
    from mlb.blend import BlendConfig
    from mlb.labels.request import RelabelConfig, RelabelRequest

    blend = {"mode": args.blend, "band_px": args.band_px}
    options = {name: getattr(args, name) for name in (
        "shard_size", "store_teacher_alpha", "skip_bad", "decode_threads")}
    config = RelabelConfig(
        blend=BlendConfig(**{key: value for key, value in blend.items() if value is not None}),
        inference=inference_from_args(args),
        **{key: value for key, value in options.items() if value is not None})
    return RelabelRequest(teacher=args.teacher, images=args.images, masks=args.masks,
                          store=args.store, weights=args.weights, corpus=args.corpus,
                          parent_version=args.parent_version, ema_round=args.ema_round,
                          config=config)


def run(args: argparse.Namespace) -> int:
    from mlb.labels.relabel import relabel

    summary = relabel(request_from_args(args), progress=not args.quiet)
    if args.json:
        print(json.dumps(summary.model_dump(mode="json"), indent=1, sort_keys=True))
        return 0
    print(summary.version_id)
    if not args.quiet:
        counts = summary.counts
        rate = f", {summary.samples_per_s:.1f} samples/s" if summary.samples_per_s else ""
        print(f"{counts['labelled']} labelled, {counts['quarantined']} quarantined in shards, "
              f"{counts['scan_quarantined']} at scan; {summary.resumed_shards} shards resumed"
              f"{rate}", file=sys.stderr)
    return 0
