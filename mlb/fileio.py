"""Small files that concurrent runs share, written so that a reader never sees a torn one.

A reproduction's seeds run as separate processes in one work folder (``report.json``,
``data.json``), and a data-parallel training's first process writes the run's summary while
the launcher waits for it: each such file is replaced whole, never rewritten in place. Only
the standard library: every layer of ``mlb`` may import this.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["write_text_atomically"]


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) at ``path`` so that a reader sees the old file or the new one.

    The bytes go to a partial file beside ``path`` named after this process and thread
    (``<name>.<pid>-<tid>.partial``), which then replaces ``path``: two writers of one path
    never share a partial file, and the last replace wins. The partial never remains: after
    a failed write ``path`` keeps its old bytes (or stays missing) and the error propagates.
    ``path``'s folder must exist. No fsync: this guards against concurrent readers and
    interrupted writers, not against a power cut.
    """
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_native_id()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        # After a replace there is nothing to remove; after a failure, a second error here
        # must not hide the first.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
