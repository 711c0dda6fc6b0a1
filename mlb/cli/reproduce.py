"""``mlb reproduce``: the paper's comparison and the domain gap, on the built-in benchmark.

    mlb reproduce paper --preset cpu --markdown results.md       # over an hour, 2 cores
    mlb reproduce paper --preset cpu --threads 1 --seeds 0       # one seed per process
    mlb reproduce domain-gap --preset cpu --markdown gap.md
    mlb reproduce paper --preset tiny --seeds 0                  # a minute or two

The cpu preset trains about 6900 steps per seed; three ``--seeds N`` processes side by side
on 2 cores take about 70 minutes, then a run without ``--seeds`` reuses their checkpoints
and writes the tables in a minute.

Both reuse finished work under ``--work`` (checkpoints, label versions), so an interrupted
run picks up where it stopped. See mlb.experiments.reproduce for the recipe and our choices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlb.cli.fields import threads_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="the paper's comparison table / the domain gap on built-in data",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    kinds = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, help_text in (("paper", "teachers, MLB student, ablations, DDC (issue table)"),
                            ("domain-gap", "composite-only model on both domains")):
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--preset", default="cpu", help="tiny | cpu (default: cpu)")
        sub.add_argument("--work", help="working folder (default: .mlb-work/reproduce)")
        sub.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
        threads_option(sub)
        sub.add_argument("--json", dest="json_path", help="write the full report as JSON here")
        sub.add_argument("--markdown", help="write the table (with its command) here")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlb.experiments.reproduce import PRESETS, domain_gap, reproduce

    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; available options are "
                         f"{', '.join(PRESETS)}")
    overrides = {key: value for key, value in (
        ("work", args.work), ("seeds", tuple(args.seeds) if args.seeds else None),
        ("threads", args.threads)) if value is not None}
    config = PRESETS[args.preset].model_copy(update=overrides)
    config = type(config).model_validate(config.model_dump())  # re-validate the overrides
    experiment = reproduce if args.experiment == "paper" else domain_gap
    report = experiment(config, progress=not args.quiet)
    tables = report.table + (f"\n\n{report.labels_table}" if args.experiment == "paper" else "")
    print(tables)
    print(f"\n{report.seconds / 60:.1f} min")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    if args.markdown:
        command = "mlb reproduce " + args.experiment + f" --preset {args.preset}" + "".join(
            f" --{key} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"
            for key, value in overrides.items() if key != "work")
        Path(args.markdown).write_text(
            f"{tables}\n\nCommand: `{command}`; run time {report.seconds / 60:.1f} "
            "min on this machine.\n")
    return 0
