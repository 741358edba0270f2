"""LitServe's request queue with its ``put`` taken off the API server's event loop.

LitServe 0.2's request handler puts each request on its request queue (a
``multiprocessing.Manager`` proxy) with a plain blocking call inside the event loop: a
socket round trip to the Manager process, which on a busy machine first waits for a core.
Every other connection of the API server (reading bodies, sending answers, refusing the
excess) waits with it. :class:`OffLoopPut` hands the request to one thread of the process
that puts (the API server), which makes the Manager calls in order; the loop goes on at
once. The inference workers' ``get`` is the Manager queue's own.
"""

from __future__ import annotations

import logging
import os
import threading
from queue import SimpleQueue
from typing import Any

log = logging.getLogger(__name__)

#: The name of the thread that forwards an API server's requests to the Manager.
THREAD_NAME = "litserve-submit"


class OffLoopPut:
    """A request queue whose :meth:`put` returns at once; a thread of this process forwards.

    The forwarding thread starts with the first :meth:`put` in each process (a forked API
    server gets its own), and forwards items in the order they were put. Everything else
    (``get``, ``qsize``...) is ``queue``'s own.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._owner: int | None = None  # the pid whose thread forwards
        self._pending: SimpleQueue[Any] = SimpleQueue()
        self._lock = threading.Lock()

    def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
        """Queue ``item`` for the forwarding thread (``block``/``timeout`` do not apply: it never blocks)."""
        self._forwarder().put(item)

    def _forwarder(self) -> SimpleQueue[Any]:
        pid = os.getpid()
        if self._owner != pid:
            with self._lock:
                if self._owner != pid:  # a new process (or the first put): its own thread and buffer
                    self._pending = SimpleQueue()
                    thread = threading.Thread(
                        target=self._forward, args=(self._pending,), name=THREAD_NAME, daemon=True
                    )
                    thread.start()
                    self._owner = pid
        return self._pending

    def _forward(self, pending: SimpleQueue[Any]) -> None:
        while True:
            item = pending.get()
            try:
                self.queue.put(item)
            except Exception as exc:  # the Manager is gone (shutdown): the request's deadline answers it
                log.warning("request not queued, the Manager is gone: %s", exc)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """The next request, from the Manager queue (the inference workers' side)."""
        return self.queue.get(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "queue":
            raise AttributeError(name)
        return getattr(self.queue, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (OffLoopPut, (self.queue,))
