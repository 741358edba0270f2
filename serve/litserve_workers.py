"""LitServe's inference worker processes: forked, preloaded, named, replaced fast.

LitServe 0.2 spawns each inference worker: a fresh interpreter that imports LitServe,
FastAPI, pydantic and this project again before it loads the model (about 1.4 of its
1.8 CPU seconds here, in every worker and again in each replacement). The API server
process (uvicorn) is already forked from the main process, so the main process holds all
of those modules. :func:`fork_workers` makes LitServe fork its inference workers from it
too, and :func:`preload` imports the metrics client a worker's ``setup`` needs once,
before the fork: a worker then only loads the model (ONNX Runtime, 0.04 CPU s to import,
is left to the worker: its import starts a native thread, and a fork is safest without).

Forking is safe here because of what the main process is when it forks: it runs no event
loop (the API server is its own process), it has imported no ONNX Runtime and created no
session (each worker creates its own, with its own thread pools, after the fork), and its
other threads (Prometheus's ``/metrics`` server, LitServe's monitor, numpy's BLAS pool,
which re-creates itself after a fork) hold no lock a worker needs (``logging`` re-creates
its locks after a fork, ``multiprocessing`` proxies reconnect). What a forked worker
inherits and never uses: the listening sockets' file descriptors.

:func:`name_worker` names each worker process :data:`WORKER_NAME` (``ps -o comm``,
``psutil.Process.name()``), since a forked worker's command line is the main process's.
:data:`MONITOR_INTERVAL_S` is how often LitServe's monitor looks for a dead worker to
replace (LitServe's default is 2 s).

:class:`FirstRequestBatchedLoop` is the workers' batching loop: LitServe 0.2's opens the
``maxBatchDelay`` window when it starts waiting, not when a request arrives, and polls the
request queue (a ``multiprocessing.Manager`` proxy: a socket round trip each) in 1 ms
slices, so a batch often closes a few milliseconds after its first request with one or
two in it (mean batch 2.5 against TorchServe's 5.5 under the same load,
docs/benchmarks.md, "Serving"). This one waits for the first request in one blocking call
and then gathers up to the batch size until ``maxBatchDelay`` after it, as TorchServe does.
It also sends a batch's messages to the API server together (:data:`BUNDLE`): each message
on LitServe's answer queue costs a round trip to the Manager process at both ends, and each
request has two (the worker's "taken" notice and the answer).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import time
from collections import deque
from collections.abc import Mapping
from queue import Empty
from typing import Any

from fastapi import HTTPException
from litserve import LitAPI, LitServer
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType

from lightning_app.inference.records import RequestError
from lightning_app.inference.service import RETRY_AFTER_S

#: The process name (``/proc/<pid>/comm``, at most 15 bytes) of every inference worker.
WORKER_NAME = "litserve-worker"
#: Seconds between LitServe's checks for a dead inference worker (its default: 2).
MONITOR_INTERVAL_S = 0.25
#: Seconds a worker waits for a request in one call before it asks again. Short on purpose:
#: the Manager process serves a pending ``get`` even after its worker was stopped or killed,
#: so a long wait hands the next request to a dead worker (lost until the deadline).
IDLE_WAIT_S = 0.01
#: Modules a worker's ``setup`` imports, imported once in the main process before the fork.
PRELOAD = ("prometheus_client", "prometheus_client.multiprocess", "serve.litserve_metrics")
#: The request id of a "worker died" notice on LitServe's answer queue (never a request's uuid4).
LOST_NOTICE = "litserve-worker-lost"
#: The first item of a message carrying several of a worker's messages to one API server.
BUNDLE = "litserve-bundle"


class ForkingMultiprocessing:
    """``multiprocessing`` as LitServe's server module sees it, with ``spawn`` asked for as ``fork``."""

    def get_context(self, method: str | None = None) -> Any:
        """The ``fork`` context where LitServe asks for ``spawn`` (its inference workers), else ``method``."""
        return multiprocessing.get_context("fork" if method == "spawn" else method)

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)


def fork_workers(server: Any, server_module: Any = None) -> None:
    """Make ``server`` (a ``LitServer`` about to run) fork preloaded workers, and replace them fast.

    LitServe 0.2 asks ``multiprocessing.get_context("spawn")`` for its workers (and their
    replacements) in ``litserve.server``: that module's ``mp`` becomes a
    :class:`ForkingMultiprocessing`. Then :func:`preload`, and LitServe's monitor looks for
    dead workers every :data:`MONITOR_INTERVAL_S`. Called once, in the process that runs
    the server (never in tests that only build one).
    """
    if server_module is None:
        import litserve.server

        server_module = litserve.server
    server_module.mp = ForkingMultiprocessing()
    preload()
    server.monitor_internal = MONITOR_INTERVAL_S  # LitServe's attribute name


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` now (those installed), so forked workers start with them; their names."""
    loaded = []
    for name in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            loaded.append(name)
    return loaded


def name_worker(name: str = WORKER_NAME) -> bool:
    """Name this worker process ``name`` for ``ps`` and ``psutil`` (Linux; ``False`` where it cannot).

    Only a child process is renamed: a ``setup`` run in the main process (a test) keeps its name.
    """
    if multiprocessing.parent_process() is None:
        return False
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        return False
    return True


class WorkerLost(HTTPException):
    """The answer to a request whose inference worker died holding it: 503, ``Retry-After``.

    :attr:`error` is the JSON body (:class:`RequestError`'s shape, as the overload refusal's).
    """

    def __init__(self, worker_id: int) -> None:
        self.error = RequestError(
            503,
            f"inference worker {worker_id} stopped while serving this request and is being "
            f"restarted; retry after {RETRY_AFTER_S} s",
        )
        super().__init__(503, self.error.message, headers={"Retry-After": str(RETRY_AFTER_S)})


def answer_lost(buffer: Mapping[str, Any], worker_id: int) -> int:
    """Answer :class:`WorkerLost` to each request in ``buffer`` that ``worker_id`` took, unanswered.

    ``buffer`` is LitServe's response buffer (request id -> ``ResponseBufferItem``, whose
    ``worker_id`` LitServe sets when a worker announces it took the request); the waiting
    request handler raises the error, and removes the entry, as for any worker error.
    Returns how many requests were answered.
    """
    lost = [item for item in buffer.values() if item.worker_id == worker_id and not item.event.is_set()]
    for item in lost:
        item.response = (WorkerLost(worker_id), LitAPIStatus.ERROR)
        item.event.set()
    return len(lost)


class NoticeTransport(MessageTransport):
    """LitServe's answer transport that also carries "worker N died" notices to the API servers.

    Messages pass through unchanged, and a :data:`BUNDLE` reaches LitServe as the messages it
    holds, one per :meth:`areceive`; a notice (:meth:`notify_lost`) is answered on arrival
    with :func:`answer_lost` on ``buffer`` and never reaches LitServe (``None``: nothing).
    """

    def __init__(self, transport: MessageTransport, buffer: Mapping[str, Any]) -> None:
        self.transport, self.buffer = transport, buffer
        self.unpacked: deque[Any] = deque()  # the rest of a bundle (each API server has its copy)

    def send(self, item: Any, consumer_id: int) -> None:
        """Send ``item`` to API server ``consumer_id``."""
        self.transport.send(item, consumer_id=consumer_id)

    def notify_lost(self, worker_id: int, consumers: int) -> None:
        """Tell each of the ``consumers`` API servers that worker ``worker_id`` died."""
        notice = (LOST_NOTICE, ((), LitAPIStatus.ERROR, LoopResponseType.REGULAR, worker_id))
        for consumer in range(consumers):
            self.transport.send(notice, consumer_id=consumer)

    async def areceive(self, consumer_id: int, *args: Any, **kwargs: Any) -> Any:
        """The next message for API server ``consumer_id``; a notice is answered here (``None``)."""
        if self.unpacked:
            return self.unpacked.popleft()
        message = await self.transport.areceive(consumer_id, *args, **kwargs)
        kind = message[0] if isinstance(message, tuple) and message else None
        if kind == LOST_NOTICE:
            answer_lost(self.buffer, int(message[1][-1]))
            return None
        if kind == BUNDLE:
            self.unpacked.extend(message[1])
            return self.unpacked.popleft()
        return message

    def close(self, **kwargs: Any) -> None:
        """Close the underlying transport."""
        self.transport.close(**kwargs)


class FailFastServer(LitServer):
    """A ``LitServer`` whose dead workers' requests get a 503 at once, not a 504 at the deadline.

    Its answer transport is a :class:`NoticeTransport`, and its monitor sends the notice
    just before it starts a replacement worker (one API: worker ids are the API's).
    """

    def _init_manager(self, num_api_servers: int) -> Any:
        manager = super()._init_manager(num_api_servers)
        transport: MessageTransport = vars(self)["_transport"]  # LitServe's, untyped there
        self.notices = NoticeTransport(transport, self.response_buffer)
        self._transport = self.notices  # what the workers and API servers use from now on
        return manager

    def launch_single_inference_worker(self, lit_api: LitAPI, worker_id: int) -> Any:
        """Answer the dead worker ``worker_id``'s requests (through the notice), then replace it."""
        self.notices.notify_lost(worker_id, self.transport_config.num_consumers)
        return super().launch_single_inference_worker(lit_api, worker_id)


class FirstRequestBatchedLoop(BatchedLoop):
    """LitServe's batched loop with TorchServe's window: ``maxBatchDelay`` from the first request.

    What LitServe's own loop does with each request is kept: the start message (so a dead
    worker's requests are known), the queue timeout (504), the shutdown sentinel. Messages
    wait in :attr:`outbox` and leave together (:meth:`flush`): the start messages once the
    batch is gathered, or as soon as the queue runs dry while gathering; the answers when
    the loop comes back for the next batch, which it does right after sending them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outbox: dict[int, list[Any]] = {}

    def put_response(
        self, transport: Any, response_queue_id: int, uid: str, response_data: Any, status: Any,
        response_type: Any,
    ) -> None:  # fmt: skip
        """Keep the message for API server ``response_queue_id`` until :meth:`flush`."""
        if status == LitAPIStatus.START and not self._restart_workers:
            return  # as LitServe: no start messages unless dead workers are replaced
        message = (uid, (response_data, status, response_type, self.worker_id))
        self.outbox.setdefault(response_queue_id, []).append(message)

    def flush(self, transport: Any) -> None:
        """Send the kept messages: one put per API server, a :data:`BUNDLE` when there are several."""
        outbox, self.outbox = self.outbox, {}
        for consumer, messages in outbox.items():
            transport.send(messages[0] if len(messages) == 1 else (BUNDLE, messages), consumer_id=consumer)

    def get_batch_requests(
        self, lit_api: Any, request_queue: Any, transport: Any
    ) -> tuple[list[Any], list[Any]]:
        """Up to ``max_batch_size`` requests: the first one waited for, the rest until the window closes."""
        payloads: list[Any] = []
        timed_out: list[Any] = []
        self.flush(transport)  # the previous batch's answers
        try:
            first = request_queue.get(timeout=IDLE_WAIT_S)
        except Empty:
            return payloads, timed_out
        end = time.monotonic() + lit_api.batch_timeout
        self._admit(first, lit_api, transport, payloads, timed_out)
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:  # in short calls: see IDLE_WAIT_S
                item = request_queue.get(timeout=min(remaining, IDLE_WAIT_S))
            except Empty:
                self.flush(transport)  # announce what was taken before waiting on
                continue
            self._admit(item, lit_api, transport, payloads, timed_out)
        self.flush(transport)  # the batch's start messages, before the model runs
        return payloads, timed_out

    def _admit(
        self, item: Any, lit_api: Any, transport: Any, payloads: list[Any], timed_out: list[Any]
    ) -> None:
        if item == _SENTINEL_VALUE:
            raise _StopLoopError()
        response_queue_id, uid, timestamp, x_enc = item
        self.put_response(
            transport=transport,
            response_queue_id=response_queue_id,
            uid=uid,
            response_data=(),
            status=LitAPIStatus.START,
            response_type=LoopResponseType.REGULAR,
        )
        if (
            lit_api.request_timeout not in (-1, False)
            and time.monotonic() - timestamp > lit_api.request_timeout
        ):
            timed_out.append((response_queue_id, uid))
        else:
            payloads.append((response_queue_id, uid, x_enc))
