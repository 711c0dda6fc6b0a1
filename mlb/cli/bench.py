"""``mlb bench``: measure mlb against its baselines, side by side, and record the results.

    mlb bench --json docs/benchmarks-full.json                  # full sizes, ~15 min on 2 cores
    mlb bench --quick --json docs/benchmarks.json --markdown docs/benchmarks.md \
        --full-report docs/benchmarks-full.json                  # a few minutes

Prints the results table (each row: what was compared, both figures, the ratio, the target,
pass or fail). ``--quick`` takes a few minutes on 2 CPU cores; without it the full sizes run
(see ``mlb.experiments.bench.config``). ``docs/benchmarks.md`` is written by this command,
never by hand; ``--full-report`` adds an earlier full run's table and time to it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from mlb.cli.fields import threads_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark the relabel, training and inference paths against baselines",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="preset", action="store_const", const="quick",
                      help="the few-minutes preset (default: the full sizes)")
    size.add_argument("--preset", choices=("tiny", "quick", "full"),
                      help="sizes by name (tiny: seconds per row, for tests)")
    parser.set_defaults(preset="full")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row numbers to run (default: all), e.g. 1,3")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="write the results page (e.g. docs/benchmarks.md)")
    parser.add_argument("--full-report", default=None, metavar="FILE",
                        help="JSON of an earlier full run, shown in the markdown with its time")
    parser.add_argument("--workdir", default=None,
                        help="keep corpora, checkpoints and label stores here (default: a "
                        "temporary folder, removed afterwards)")
    threads_option(parser)  # also ONNX Runtime's: the report records torch's number
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    parser.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """This run's command as a user would retype it (recorded in the report)."""
    words = ["mlb", "bench"]
    if args.preset == "quick":
        words.append("--quick")
    elif args.preset != "full":
        words += ["--preset", args.preset]
    for flag, value in (("--rows", args.rows), ("--threads", args.threads), ("--json", args.json),
                        ("--markdown", args.markdown), ("--full-report", args.full_report),
                        ("--workdir", args.workdir)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)  # --quiet changes no figure: left out


def run(args: argparse.Namespace) -> int:
    from mlb.experiments.bench import PRESETS, run_bench, write_json, write_markdown
    from mlb.experiments.bench.report import read_json, render_table

    full = None if args.full_report is None else read_json(args.full_report)  # fail early
    rows = None if args.rows is None else [key.strip() for key in args.rows.split(",")]
    report = run_bench(PRESETS[args.preset], rows=rows, workdir=args.workdir,
                       command=command_line(args), progress=not args.quiet)
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        write_markdown(report, args.markdown, full=full)
    if not args.quiet:
        print("\n".join(render_table(report.rows)))
        for key, reason in report.skipped.items():
            print(f"row {key} not measured: {reason}")
        counts = report.counts
        print(f"{counts['passed']} pass, {counts['failed']} fail, {counts['not_judged']} "
              f"reported; {report.seconds:.0f} s", file=sys.stderr)
    return 0

