"""What every flow does first: find its data root, forward the library's log, name its run.

- :func:`start_run` resolves the request's relative paths against the data root
  (:mod:`flows.paths`) and logs where they came from;
- the library logs progress through python ``logging`` under the logger ``mlb`` (training
  every ``log_every`` steps, ...). :func:`forward_library_logs` attaches Prefect's API log
  handler to that logger, so those lines appear in the run's log while it runs (what
  ``PREFECT_LOGGING_EXTRA_LOGGERS=mlb`` does, but without depending on how the process
  running the flow was started: ``serve``, a worker or an embedded run);
- :func:`artifact_key` gives per-run artifact keys (store URIs: ``mlb.labels.store.store_uri``).
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from pydantic import BaseModel

from flows.paths import at_data_root, data_root

LIBRARY_LOGGER = "mlb"

Model = TypeVar("Model", bound=BaseModel)


def _in_a_run(record: logging.LogRecord) -> bool:
    # The handler stays on the logger for the life of the process; library calls made later
    # outside any run (a script, a test) must not send to the API (Prefect warns, and tests
    # turn that warning into an error).
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def forward_library_logs() -> None:
    """Send the ``mlb`` logger's INFO lines to the current flow run's log (once per process)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_in_a_run)
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def start_run(request: Model) -> Model:
    """``request`` with its relative paths under the data root; logs the root and the run."""
    forward_library_logs()
    root, source = data_root()
    resolved = at_data_root(request, root)
    get_run_logger().info("data root %s (from %s)", root, source)
    return resolved


def flow_run_id() -> str | None:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) made of ``parts``."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
