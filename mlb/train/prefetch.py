"""Read batches ahead in a background thread, so that loading overlaps the training step.

With ``num_workers=0`` the DataLoader decodes, reads labels and augments in the training
thread, between steps. Torch's kernels and OpenCV's decode release the GIL, so one reader
thread runs the next batches on another core while the step computes: on a 2-core machine
with ``torch.set_num_threads(1)`` the loader's time disappears from the step (benchmark row 2).

Order is kept, so a run's batches are the same with and without prefetch. Only the reader
thread touches the global RNGs (``mlb.train.sampling.seeded_rng``); the training step draws
no random numbers, so the two threads never interleave draws.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Failed:
    """An exception raised by the source, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetched(source: Iterable[T], depth: int) -> Generator[T, None, None]:
    """Yield ``source``'s items in order, reading up to ``depth`` of them ahead in a thread.

    ``depth == 0`` reads in the caller's thread. An exception raised while reading is
    raised here, at the item where it happened. Closing the generator early (``break``,
    garbage collection) stops the reader thread.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    return _prefetch(source, depth) if depth else _inline(source)


def _inline(source: Iterable[T]) -> Generator[T, None, None]:
    yield from source


def _prefetch(source: Iterable[T], depth: int) -> Generator[T, None, None]:
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in source:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failed(error))
            return
        put(_DONE)

    reader = threading.Thread(target=read, name="mlb-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        reader.join()
