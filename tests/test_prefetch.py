"""The background reader keeps order, hands errors to the consumer and stops when closed."""

from __future__ import annotations

import threading
import time

import pytest

from mlb.train.prefetch import prefetched


def _reader_threads() -> int:
    return sum(thread.name == "mlb-prefetch" for thread in threading.enumerate())


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_items_come_in_order(depth):
    assert list(prefetched(range(50), depth)) == list(range(50))


def test_reads_ahead_in_another_thread():
    consumer = threading.get_ident()
    readers: list[int] = []

    def source():
        for item in range(4):
            readers.append(threading.get_ident())
            yield item

    assert list(prefetched(source(), 2)) == [0, 1, 2, 3]
    assert readers and all(ident != consumer for ident in readers)
    assert list(prefetched(source(), 0)) == [0, 1, 2, 3]
    assert readers[-1] == consumer


def test_an_error_while_reading_is_raised_at_its_item():
    def source():
        yield 1
        yield 2
        raise OSError("damaged file shard-7.png")

    seen = []
    with pytest.raises(OSError, match=r"shard-7\.png"):
        for item in prefetched(source(), 2):
            seen.append(item)
    assert seen == [1, 2]
    assert _reader_threads() == 0


def test_closing_early_stops_the_reader():
    def endless():
        item = 0
        while True:
            yield item
            item += 1

    stream = prefetched(endless(), 2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    deadline = time.monotonic() + 5
    while _reader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _reader_threads() == 0


def test_negative_depth_is_refused():
    with pytest.raises(ValueError, match="prefetch depth must be >= 0, got -1"):
        prefetched([], -1)
