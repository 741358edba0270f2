"""serve/litserve_submit.py: the API server's request puts leave the event loop at once.

A real ``multiprocessing.Manager`` queue (as LitServe's) and a forked process; the slow and
the failing queues are small stand-ins for a Manager that waits for a core or is gone.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from queue import Empty
from typing import Any

import pytest

from serve.litserve_submit import OffLoopPut


class SlowQueue:
    """A queue whose ``put`` takes ``delay`` s (a Manager waiting for a core); the first ``fail`` raise."""

    def __init__(self, delay: float = 0.0, fail: int = 0) -> None:
        self.items: list[Any] = []
        self.delay, self.fail = delay, fail
        self.arrived = threading.Condition()

    def put(self, item: Any) -> None:
        time.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise BrokenPipeError("the Manager is gone")
        with self.arrived:
            self.items.append(item)
            self.arrived.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Any]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.items) >= n, timeout)
        return self.items


def test_put_returns_at_once_while_the_manager_is_slow_and_items_keep_their_order() -> None:
    slow = SlowQueue(delay=0.2)
    queue = OffLoopPut(slow)
    started = time.monotonic()
    for i in range(5):
        queue.put(i)
    assert time.monotonic() - started < 0.1, "put waited for the Manager"
    assert slow.wait_for(5) == [0, 1, 2, 3, 4]


def test_a_failed_put_loses_that_request_only() -> None:
    flaky = SlowQueue(fail=1)
    queue = OffLoopPut(flaky)
    for item in ("lost", "kept"):
        queue.put(item)
    assert flaky.wait_for(1) == ["kept"]


def child_puts(queue: OffLoopPut) -> None:
    queue.put("from the forked API server")
    time.sleep(1)  # the forwarding thread is a daemon: let it send before the process ends


def test_a_real_manager_queue_gets_what_this_and_a_forked_process_put() -> None:
    with multiprocessing.Manager() as manager:
        queue = OffLoopPut(manager.Queue())
        queue.put("from the main process")
        assert queue.get(timeout=10) == "from the main process"
        child = multiprocessing.get_context("fork").Process(target=child_puts, args=(queue,))
        child.start()
        assert queue.get(timeout=10) == "from the forked API server"
        child.join(10)
        assert queue.qsize() == 0  # the Manager queue's own methods pass through
        with pytest.raises(Empty):  # nothing arrived twice
            queue.get(timeout=0.05)
