"""Exclusive locks for label store writers: OS file locks, released when the holder dies.

``fcntl.flock`` is used (not ``lockf``): the kernel drops it when the holding process exits for
any reason, SIGKILL included, so a killed relabel run never leaves a stale lock behind; and two
``open()`` calls conflict even inside one process, so threads are excluded too. The lock file
holds a line naming the holder (pid, host, time), shown in ``VersionLocked`` messages.

Object stores (S3, GCS, ``memory://``) have no such lock: there the label store takes none,
and running one writer per version at a time is the caller's responsibility.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from storage.errors import VersionLocked
from storage.layout import local_write_error

_log = logging.getLogger(__name__)
_POLL_S = (0.02, 0.5)  # first and longest wait between attempts


@contextlib.contextmanager
def file_lock(path: str, *, what: str, timeout_s: float,
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created) for the ``with`` body.

    Waits up to ``timeout_s`` seconds for another holder, then raises ``VersionLocked``
    naming ``what`` (e.g. "shard 3 of version v-1234") and the holder.

    ``on_wait`` (e.g. a "waiting for another run" notice) is called once, just before the
    first wait, and only when another holder has the lock and ``timeout_s`` allows a wait:
    never when the lock is free, never with ``timeout_s`` 0. An exception it raises ends the
    attempt (the lock is not taken) and propagates. None: a logging warning naming ``what``
    and the holder, so that no writer hangs silently for up to ``timeout_s``.
    """
    def say_waiting() -> None:
        _log.warning("waiting up to %g s for %s: it is held by %s", timeout_s, what,
                     read_holder(path))

    handle = _open_lock_file(path)
    try:
        _acquire(handle, what=what, timeout_s=timeout_s, on_wait=on_wait or say_waiting)
        try:
            # The holder line only helps a waiting writer name us; a full or read-only disk
            # must fail on the writes that matter, with their own path, not here.
            with contextlib.suppress(OSError):
                handle.seek(0)
                handle.truncate()
                handle.write(_holder_line() + "\n")
                handle.flush()
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        # Closing flushes a holder line a full disk refused: that must not replace the
        # error (if any) of the body.
        with contextlib.suppress(OSError):
            handle.close()


def _open_lock_file(path: str) -> TextIO:
    # A publish removes its version's lock folder (storage.labelstore): a late writer may see
    # it vanish between creating and opening, and simply creates it again.
    for _ in range(100):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                return open(path, "a+")
        except OSError as error:
            raise local_write_error(path, error) from None
    raise FileNotFoundError(f"cannot create lock file {path}: its folder keeps disappearing")


def _acquire(handle: TextIO, *, what: str, timeout_s: float,
             on_wait: Callable[[], None] | None) -> None:
    deadline = time.monotonic() + timeout_s
    pause = _POLL_S[0]
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise VersionLocked(
                    f"{what} is locked by {read_holder(handle.name)} (waited {timeout_s:g} s); "
                    "another writer is working on it: wait for it or stop it"
                ) from None
            if on_wait is not None:
                on_wait()
                on_wait = None  # once per acquisition, however many polls follow
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, _POLL_S[1])


def read_holder(path: str) -> str:
    """The holder line of a lock file, or 'an unknown process' when it is empty."""
    try:
        with open(path) as handle:
            line = handle.readline().strip()
    except FileNotFoundError:
        line = ""
    return line or "an unknown process"


def _holder_line() -> str:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return json.dumps(holder, sort_keys=True)
