"""Make processes forked from a Prefect process exit cleanly.

Prefect's background services (the API log worker, the events worker) register callbacks
that ``threading._shutdown()`` runs when a process ends. A forked child inherits them
without the service threads they drain, so each one fails an assertion
(``prefect._internal.concurrency.services._drain``) and the child exits with code 1 and no
traceback. torch's DataLoader reports that as a crashed worker, so a training flow with
``num_workers > 0`` failed, as did any forked reader started after a flow ran in the same
process (measured with prefect 3.8.8 on Python 3.11).

The child never runs those services, so after each fork the inherited callbacks are
dropped. ``threading._threading_atexits`` is private; if it ever disappears this is a no-op.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def _is_prefect_callback(callback: Callable[[], object]) -> bool:
    function = getattr(callback, "func", callback)  # functools.partial(bound method)
    owner = getattr(function, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("prefect.")


def drop_inherited_prefect_exit_callbacks() -> None:
    """In a freshly forked child: forget the parent's Prefect thread-exit callbacks."""
    callbacks = getattr(threading, "_threading_atexits", None)
    if isinstance(callbacks, list):
        callbacks[:] = [cb for cb in callbacks if not _is_prefect_callback(cb)]


os.register_at_fork(after_in_child=drop_inherited_prefect_exit_callbacks)
