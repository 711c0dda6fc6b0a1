"""What every flow does first: find its data root, forward the library's log, name its run.

- :func:`start_run` resolves the request's relative paths against the data root
  (:mod:`flows.paths`) and logs where they came from;
- the library logs progress through python ``logging`` under the logger ``mlb`` (training
  every ``log_every`` steps, ...). :func:`forward_library_logs` attaches Prefect's API log
  handler to that logger, so those lines appear in the run's log while it runs (what
  ``PREFECT_LOGGING_EXTRA_LOGGERS=mlb`` does, but without depending on how the process
  running the flow was started: ``serve``, a worker or an embedded run);
- :func:`store_uri` and :func:`artifact_key` give absolute store URIs and per-run keys.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TypeVar

from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler
from pydantic import BaseModel

from flows.paths import at_data_root, data_root

LIBRARY_LOGGER = "mlb"

Model = TypeVar("Model", bound=BaseModel)


def forward_library_logs() -> None:
    """Send the ``mlb`` logger's INFO lines to the current flow run's log (once per process)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(APILogHandler())
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


def store_uri(store: str) -> str:
    """An absolute URI for a store path (``file:///...``); URLs are kept as they are."""
    return store if "://" in store else Path(store).resolve().as_uri()


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) made of ``parts``."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
