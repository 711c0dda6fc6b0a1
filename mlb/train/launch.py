"""Start a data-parallel training run with torchrun, from a request (``mlb train --nproc``, flows).

torchrun (``python -m torch.distributed.run``) is the launcher: it starts the processes, runs
the c10d rendezvous, watches them and ends the job when one fails. This module only builds its
command line, streams its output and turns a failure into one error naming the rank:

    summary = launch_training("student", request, LaunchConfig(nproc=2))

Each process runs :mod:`mlb.train.worker` on the request (written to a JSON file), which calls
the same ``train_*`` recipe as ``mlb train``; the first process of each machine writes the
:class:`TrainSummary` (every rank computes the same one).

One machine: ``--standalone`` (torchrun picks a free port). Several machines: every machine
runs the same launch with ``nnodes`` and the same ``rdzv_endpoint`` (``host:port`` of one of
them) and ``rdzv_id``; the corpus, the label store and the output folder must be the same
paths on every machine (a shared file system, or an fsspec URL for the store).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field

from mlb.config import FrozenConfig
from mlb.train.config import DdcRequest, StudentRequest, TeacherRequest, TrainSummary

__all__ = ["LaunchConfig", "Recipe", "TrainingFailed", "launch_training", "torchrun_command"]

Recipe = Literal["teacher", "student", "ddc"]
REQUEST_TYPES: dict[str, type[FrozenConfig]] = {
    "teacher": TeacherRequest, "student": StudentRequest, "ddc": DdcRequest,
}


class TrainingFailed(ValueError):
    """A data-parallel run ended with a failed process; the message names its rank."""


class LaunchConfig(FrozenConfig):
    """How many processes train together, and on how many machines (torchrun's options)."""

    nproc: int = Field(1, ge=1)
    """Processes on this machine (one per GPU; on the CPU each takes its share of the cores)."""
    nnodes: int = Field(1, ge=1)
    """Machines in the job; each runs the same launch."""
    rdzv_endpoint: str | None = None
    """``host:port`` where the machines meet (c10d rendezvous); needed when ``nnodes > 1``."""
    rdzv_id: str = "mlb"
    """Names the job at the endpoint: every machine of one job passes the same id."""

    def model_post_init(self, context: object, /) -> None:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes is {self.nnodes}: rdzv_endpoint (host:port of one "
                             f"machine of the job) is needed for the machines to meet")


def torchrun_command(recipe: Recipe, request_file: Path, summary_file: Path,
                     launch: LaunchConfig, *, log_dir: Path, options: list[str]) -> list[str]:
    """The ``python -m torch.distributed.run ... -m mlb.train.worker ...`` command line."""
    command = [sys.executable, "-m", "torch.distributed.run",
               f"--nproc-per-node={launch.nproc}", f"--log-dir={log_dir}"]
    if launch.rdzv_endpoint is None:
        command.append("--standalone")
    else:
        command += [f"--nnodes={launch.nnodes}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={launch.rdzv_endpoint}", f"--rdzv-id={launch.rdzv_id}"]
    return [*command, "-m", "mlb.train.worker", recipe, str(request_file),
            "--summary", str(summary_file), *options]


def launch_training(
    recipe: Recipe,
    request: TeacherRequest | StudentRequest | DdcRequest,
    launch: LaunchConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    on_output: Callable[[str], None] = print,
) -> TrainSummary:
    """Train ``request`` with ``launch.nproc`` processes per machine under torchrun.

    ``on_output`` receives every line the processes and torchrun print (the flows send them to
    the run logger). Raises :class:`TrainingFailed` naming the failed rank and its error.
    """
    if not isinstance(request, REQUEST_TYPES[recipe]):
        raise ValueError(f"a {recipe} run needs a {REQUEST_TYPES[recipe].__name__}, "
                         f"got {type(request).__name__}")
    options = [*(["--resume"] if resume else []), *(["--overwrite"] if overwrite else []),
               *([] if stop_at_step is None else ["--stop-at-step", str(stop_at_step)])]
    with tempfile.TemporaryDirectory(prefix="mlb-launch-") as folder:
        work = Path(folder)
        request_file, summary_file = work / "request.json", work / "summary.json"
        request_file.write_text(request.model_dump_json(), encoding="utf-8")
        command = torchrun_command(recipe, request_file, summary_file, launch,
                                   log_dir=work / "logs", options=options)
        code, tail = _run_streaming(command, on_output)
        if code != 0:
            raise TrainingFailed(_failure(tail, code))
        return TrainSummary.model_validate_json(summary_file.read_text(encoding="utf-8"))


class _Stopped(Exception):
    """This launcher was asked to stop (SIGTERM): torchrun is stopped with it."""


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, systemd, a cancelled flow run) stops the job instead of orphaning
    torchrun and its processes; only where signals can be handled (the main thread)."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: the caller's own handling applies
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _QuietTracebacks:
    """Passes torchrun's output on without its own Python tracebacks and its failure summary
    (the failure is reported as one line naming the rank); the processes' lines pass."""

    def __init__(self, on_output: Callable[[str], None]) -> None:
        self.on_output = on_output
        self.in_traceback = False
        self.summary_rules = 0  # the summary sits between two lines of "=" (0: not in it)

    def __call__(self, line: str) -> None:
        if self.summary_rules:
            if set(line.strip()) == {"="}:
                self.summary_rules += 1
            if self.summary_rules > 2:
                self.summary_rules = 0
        elif line.startswith("Traceback (most recent call last):"):
            self.in_traceback = True
        elif self.in_traceback:
            # The traceback ends with its first unindented line: the exception itself.
            self.in_traceback = not line or line[:1].isspace()
            if not self.in_traceback and "ChildFailedError" in line:
                self.summary_rules = 1
        else:
            self.on_output(line)


def _run_streaming(command: list[str], on_output: Callable[[str], None]) -> tuple[int, str]:
    """Run ``command``, passing each output line on; its exit code and last lines."""
    tail: deque[str] = deque(maxlen=400)  # torchrun's failure summary ends the output
    show = _QuietTracebacks(on_output)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with _stop_on_sigterm():
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line.rstrip("\n"))
                show(line.rstrip("\n"))
            return process.wait(), "\n".join(tail)
    except _Stopped:
        raise TrainingFailed("training stopped: this launcher received SIGTERM and stopped "
                             "torchrun and its processes; rerun with --resume to continue from "
                             "the last checkpoint") from None
    finally:
        if process.poll() is None:  # interrupted: torchrun stops its processes on SIGTERM
            process.terminate()
            process.wait()


# One entry of torchrun's failure summary (torch.distributed.elastic ChildFailedError).
_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)"
                      r"[^\n]*\n\s*error_file\s*:\s*([^\n]*)")


def _failure(tail: str, code: int) -> str:
    """What made the job fail, from torchrun's summary: the ranks that died or raised first,
    each with its own message (its error file); ranks torchrun then stopped are counted."""
    causes, stopped = [], 0
    for rank, exit_code, error_file in _FAILURE.findall(tail):
        message = _error_message(error_file.strip())
        if message is not None:
            causes.append(message)
        elif int(exit_code) == -signal.SIGTERM:  # stopped by torchrun after another failed
            stopped += 1
        elif int(exit_code) < 0:
            causes.insert(0, f"rank {rank} was killed by signal {-int(exit_code)} "
                             f"({signal.Signals(-int(exit_code)).name})")
        else:
            causes.append(f"rank {rank} exited with code {exit_code} (its output is above)")
    if not causes and stopped:
        causes.append(f"{stopped} process(es) were stopped by SIGTERM")
    if not causes:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        return f"training failed: torchrun exited with code {code}: {last}"
    others = f" ({stopped} other process(es) stopped by torchrun)" if stopped else ""
    return "training failed: " + "; ".join(causes) + others


def _error_message(error_file: str) -> str | None:
    """The message a process left in its torchrun error file, if it left one."""
    try:
        document = json.loads(Path(error_file).read_text(encoding="utf-8"))
        return str(document["message"]["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
