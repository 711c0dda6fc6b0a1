"""``mlb reproduce``: the paper's comparison and the domain gap, on built-in or your own data.

    mlb reproduce paper --preset cpu --markdown results.md       # over an hour, 2 cores
    mlb reproduce paper --preset cpu --threads 1 --seeds 0       # one seed per process
    mlb reproduce domain-gap --preset cpu --markdown gap.md
    mlb reproduce paper --preset tiny --seeds 0                  # a minute or two
    mlb reproduce paper --preset tiny --matte mattes/ --natural photos/ masks/ alphas/ \\
        --validation val/images val/alphas val/masks             # your own data
    mlb reproduce paper --preset gpu --plan                      # what a preset trains
    mlb reproduce paper --preset cpu --rows modnet_mlb           # one row and its inputs
    mlb reproduce merge seed0.json seed1.json --markdown table.md  # seeds run apart
    mlb reproduce paper --preset cpu256 --set student_lr=1e-4      # one field replaced

Without data options the built-in benchmark is generated under ``--work``. ``--matte DIR``
reads ``DIR/fg``, ``DIR/alpha`` and ``DIR/bg`` (the ``mlb synth composite`` layout);
``--matte-fg``, ``--matte-alpha`` and ``--matte-bg`` give (or replace) single folders.
``--natural IMAGES MASKS [ALPHAS]``: the segmentation corpus; its true alphas only add the
label table and the oracle row. ``--validation IMAGES ALPHAS [MASKS]``: the masks add the
"coarse masks" row. Folders pair files by stem (docs/datasets.md).

The cpu preset trains 11000 steps per seed (7700 of its U-Net, 3300 of MODNet): about two
hours of one quiet core a seed, so three ``--seeds N`` processes on 2 cores take over three
hours; then a run without ``--seeds`` reuses their checkpoints and writes the tables in
minutes. The gpu preset (the paper's 512 px recipe) needs CUDA.

``--rows`` trains and scores only the rows named (with both teachers, which every row starts
from, and whatever the named rows start from); in a work folder of a full run it reuses the
finished checkpoints. Both reuse finished work under ``--work`` (checkpoints, label
versions), so an interrupted run picks up where it stopped; a work folder refuses data other
than it was started on.
``merge`` writes one table from the ``--json`` reports of runs that each did some of the seeds
(processes side by side, or other machines): the per-seed scores as measured, nothing
retrained or rescored; the runs must share their settings, rows and data.
See mlb.experiments.reproduce for the recipe and our choices.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from mlb.cli.fields import threads_option

# option -> (ReproduceData fields in order, how many folders are required)
DATA_OPTIONS: dict[str, tuple[tuple[str, ...], int]] = {
    "matte": (("matte",), 1),
    "matte_fg": (("matte_fg",), 1),
    "matte_alpha": (("matte_alpha",), 1),
    "matte_bg": (("matte_bg",), 1),
    "natural": (("natural_images", "natural_masks", "natural_alphas"), 2),
    "validation": (("validation_images", "validation_alphas", "validation_masks"), 2),
    "composite_validation": (("composite_images", "composite_alphas"), 2),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="the paper's comparison table / the domain gap",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    kinds = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, help_text in (("paper", "teachers, MLB student, ablations, DDC (issue table)"),
                            ("domain-gap", "composite-only model on both domains")):
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--preset", default="cpu",
                         help="a name of mlb.experiments.reproduce.PRESETS, e.g. tiny, cpu, "
                              "gpu (default: cpu; an unknown name lists them all)")
        sub.add_argument("--work", help="working folder (default: .mlb-work/reproduce)")
        sub.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
        threads_option(sub)
        sub.add_argument("--json", dest="json_path", help="write the full report as JSON here")
        sub.add_argument("--markdown", help="write the table (with its command) here")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.add_argument("--plan", action="store_true",
                         help="print every training run of the preset and exit")
        sub.add_argument("--set", dest="settings", action="append", type=_setting,
                         metavar="FIELD=VALUE",
                         help="replace one field of the preset (a JSON value, else a word), "
                              "e.g. --set student_lr=3e-4 --set trimap_kernel_range=[1,15]; "
                              "repeatable (fields: mlb.experiments.reproduce.ReproduceConfig)")
        if name == "paper":
            sub.add_argument("--rows", type=_row_list, metavar="ROW,ROW",
                             help="only these rows of the table, with the rows they start "
                                  "from (default: all), e.g. modnet_teacher,modnet_mlb; "
                                  "both teachers always train")
        data = sub.add_argument_group("data (default: the built-in benchmark)")
        data.add_argument("--matte", metavar="DIR", help="matte corpus with fg/ alpha/ bg/")
        for role in ("fg", "alpha", "bg"):
            data.add_argument(f"--matte-{role}", metavar="DIR",
                              help=f"the matte corpus's {role}/ folder (replaces --matte's)")
        if name == "paper":
            data.add_argument("--natural", nargs="+", metavar="DIR",
                              help="IMAGES MASKS [ALPHAS]: the segmentation corpus")
        data.add_argument("--validation", nargs="+", metavar="DIR",
                          help="IMAGES ALPHAS [MASKS]: natural validation photos")
        if name == "domain-gap":
            data.add_argument("--composite-validation", nargs=2, metavar="DIR",
                              help="IMAGES ALPHAS: held-out composites (needed with --matte)")
        sub.set_defaults(func=run)
    merge = kinds.add_parser("merge", help="one table from the reports of runs of other seeds")
    merge.add_argument("reports", nargs="+", metavar="REPORT",
                       help="--json reports of `mlb reproduce paper` runs")
    merge.add_argument("--json", dest="json_path", help="write the merged report as JSON here")
    merge.add_argument("--markdown", help="write the tables (with the merge command) here")
    merge.set_defaults(func=run_merge)


def _row_list(text: str) -> tuple[str, ...]:
    """``--rows a,b``: row keys (checked against the preset's rows by its config)."""
    rows = tuple(row.strip() for row in text.split(",") if row.strip())
    if not rows:
        raise argparse.ArgumentTypeError(f"expected row names separated by commas, got "
                                         f"{text!r}")
    return rows


# fields with an option of their own
OWN_OPTIONS = ("work", "seeds", "threads", "rows")


def _setting(text: str) -> tuple[str, object]:
    """``--set field=value``: the value read as JSON (numbers, lists, true, null), else kept
    as the word it is; the config checks both."""
    field, equals, value = text.partition("=")
    if not equals or not field.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field.strip(), json.loads(value)
    except ValueError:
        return field.strip(), value


def _data_fields(args: argparse.Namespace) -> dict[str, str]:
    """The ReproduceData fields of the given options; a wrong count of folders is an error."""
    from mlb.cli import UsageError

    fields: dict[str, str] = {}
    for option, (names, required) in DATA_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        folders = [value] if isinstance(value, str) else list(value)
        if not required <= len(folders) <= len(names):
            flag = "--" + option.replace("_", "-")
            wanted = " ".join(name.rsplit("_", 1)[-1].upper() for name in names[:required])
            optional = "".join(f" [{name.rsplit('_', 1)[-1].upper()}]"
                               for name in names[required:])
            raise UsageError(f"{flag} takes {wanted}{optional}, got {len(folders)} "
                             f"folder(s): {' '.join(folders)}")
        fields.update(zip(names, folders, strict=False))
    return fields


def run(args: argparse.Namespace) -> int:
    from mlb.cli import UsageError
    from mlb.experiments.reproduce import (
        PRESETS,
        ReproduceData,
        check_rows_available,
        domain_gap,
        domain_gap_plan,
        plan,
        plan_table,
        reproduce,
    )

    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; available options are "
                         f"{', '.join(PRESETS)}")
    overrides = {key: value for key, value in (
        ("work", args.work), ("seeds", tuple(args.seeds) if args.seeds else None),
        ("threads", args.threads), ("rows", getattr(args, "rows", None)))
        if value is not None}
    settings = dict(args.settings or ())
    taken = [field for field in OWN_OPTIONS if field in settings]
    if taken == ["rows"] and args.experiment != "paper":
        raise UsageError(f"--set rows=...: {args.experiment} has no rows")
    if taken:
        raise UsageError(f"--set {taken[0]}=...: use --{taken[0]} instead")
    preset = PRESETS[args.preset]
    # validated as a whole: a typo in a field name, a bad value or a combination the config
    # refuses is one error line before anything runs
    config = type(preset).model_validate({**preset.model_dump(), **settings, **overrides})
    data = ReproduceData(**_data_fields(args))
    if args.plan:
        oracle = not data.given("natural") or data.natural_alphas is not None
        if args.experiment == "paper":
            masks = not data.given("validation") or data.validation_masks is not None
            check_rows_available(config, oracle=oracle, coarse_masks=masks)
        runs = (plan(config, oracle=oracle) if args.experiment == "paper"
                else domain_gap_plan(config))
        print(plan_table(runs))
        return 0
    experiment = reproduce if args.experiment == "paper" else domain_gap
    report = experiment(config, data, progress=not args.quiet)
    tables = report.table + (f"\n\n{report.labels_table}" if args.experiment == "paper" else "")
    print(tables)
    print(f"\n{report.seconds / 60:.1f} min")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    if args.markdown:
        Path(args.markdown).write_text(
            f"{tables}\n\nCommand: `{_command(args, overrides)}`; run time "
            f"{report.seconds / 60:.1f} min on this machine.\n")
    return 0


def _command(args: argparse.Namespace, overrides: dict) -> str:
    """The command line that reproduces this table (``--work`` and outputs left out)."""
    words = ["mlb", "reproduce", args.experiment, "--preset", args.preset]
    for key, value in overrides.items():
        if key == "rows":
            words += ["--rows", ",".join(value)]
        elif key != "work":
            words += [f"--{key}", *map(str, value if isinstance(value, tuple) else (value,))]
    for field, value in args.settings or ():
        words += ["--set", f"{field}={json.dumps(value)}"]
    for option in DATA_OPTIONS:
        value = getattr(args, option, None)
        if value is not None:
            words += ["--" + option.replace("_", "-"),
                      *([value] if isinstance(value, str) else value)]
    return shlex.join(words)


def run_merge(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mlb.config import validation_text
    from mlb.experiments.reproduce import ReproduceReport, merge_reports

    reports = []
    for path in args.reports:
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a report of `mlb reproduce paper --json` "
                             "(not text)") from None
        try:
            reports.append(ReproduceReport.model_validate_json(text))
        except ValidationError as error:
            problems = validation_text(error).split("; ")
            more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
            raise ValueError(f"{path} is not a report of `mlb reproduce paper --json`: "
                             f"{'; '.join(problems[:2])}{more}") from None
    report = merge_reports(reports)
    tables = f"{report.table}\n\n{report.labels_table}"
    print(tables)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    if args.markdown:
        command = shlex.join(["mlb", "reproduce", "merge", *args.reports])
        Path(args.markdown).write_text(
            f"{tables}\n\nCommand: `{command}`, merging {len(reports)} run(s) of "
            f"{report.seconds / 60:.1f} min in all.\n")
    return 0
