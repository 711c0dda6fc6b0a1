"""``mlb-flows``: run the whole pipeline once (``demo``) or serve the deployments (``serve``).

    mlb-flows demo [--work DIR]        # synth -> teacher -> relabel -> student -> evaluate
    mlb-flows serve [--limit N]        # every deployment of prefect.yaml, one process
    mlb-flows deployments              # what serve would serve: names, schedules, entrypoints
    mlb-flows run relabel [--param request.teacher=checkpoints/student.pt]... [--wait]

``demo`` runs embedded (no server needed; Prefect starts one temporary API for the run) unless
``PREFECT_API_URL`` points at a server, where the runs then appear.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
from prefect.exceptions import ObjectNotFound, ParameterTypeError, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from flows.deploy import PROJECT_FILE

DEFAULT_DEMO_WORK = Path(".mlb-work/demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlb-flows", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run the pipeline flow on a tiny built-in corpus")
    demo.add_argument("--work", type=Path, default=DEFAULT_DEMO_WORK,
                      help=f"folder for data, checkpoints and labels (default {DEFAULT_DEMO_WORK})")
    demo.set_defaults(func=_demo)

    serve = commands.add_parser("serve", help="serve every deployment of prefect.yaml")
    serve.add_argument("--file", type=Path, default=PROJECT_FILE,
                       help="the prefect.yaml to read (default: the project's)")
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    serve.add_argument("--only", nargs="+", default=(), metavar="NAME",
                       help="serve only these deployments")
    serve.set_defaults(func=_serve)

    run = commands.add_parser(
        "run", help="start a run of a deployment by its short name; prints the run's URL",
        description="Start a flow run of deployment NAME (short for NAME/NAME) with the "
        "deployment's default parameters, each --param KEY=VALUE replacing one of them. KEY "
        "may be dotted (request.teacher) to replace one field of a request; VALUE is JSON "
        "when it parses as JSON, else a string.")
    run.add_argument("name", metavar="NAME", help="deployment name, e.g. relabel")
    run.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--wait", action="store_true",
                     help="wait for the run to end; exit 1 unless it completed")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="with --wait: give up after S seconds (exit 1)")
    run.set_defaults(func=_run)

    listing = commands.add_parser("deployments", help="list the deployments serve would serve")
    listing.add_argument("--file", type=Path, default=PROJECT_FILE)
    listing.set_defaults(func=_list)
    return parser


def _demo(args: argparse.Namespace) -> int:
    # Dask's INFO lines (workers starting and stopping) would bury the demo's own output; set
    # before dask is imported, so that the local cluster's worker processes inherit it.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from flows.pipeline import PipelineRequest, pipeline

    result = pipeline(PipelineRequest.demo(args.work.resolve()))
    print(Path(result.report).read_text())
    print(f"report: {result.report}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flows.deploy import TAKEOVER, serve_deployments

    reason = serve_deployments(args.file, limit=args.limit, only=tuple(args.only))
    return 2 if reason.startswith(TAKEOVER) else 0


def _run(args: argparse.Namespace) -> int:
    from flows.submit import parse_overrides, submit

    run = submit(args.name, parse_overrides(args.param), wait=args.wait, timeout=args.timeout)
    print(f"flow run {run.name} ({run.id}) of {run.deployment}: {run.state}")
    print(run.url)
    if run.message and run.state != "COMPLETED":
        print(f"{run.state}: {run.message}", file=sys.stderr)
    return 0 if not args.wait or run.state == "COMPLETED" else 1


def _list(args: argparse.Namespace) -> int:
    from flows.deploy import read_deployments

    for spec in read_deployments(args.file):
        schedules = ", ".join(str(getattr(s, "cron", None) or getattr(s, "interval", ""))
                              for s in spec.schedules) or "manual"
        print(f"{spec.name}/{spec.name}\t{spec.entrypoint}\t{schedules}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # e.g. `mlb-flows run ... | head -1`: the reader has gone
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return 0
    except httpx.TransportError as error:
        print(f"mlb-flows {args.command}: error: cannot reach the Prefect API at "
              f"{PREFECT_API_URL.value()} ({error}); start the server or set PREFECT_API_URL",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, ParameterTypeError, ObjectNotFound,
            PrefectHTTPStatusError, TimeoutError) as error:
        # Expected failures (bad paths, bad values) get one clear line, like `mlb`.
        print(f"mlb-flows {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
