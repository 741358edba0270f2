"""LitServe's workers forked from the server process: the start method, the preload, the name,
and the answer to the requests a dead worker held.

Real ``multiprocessing`` contexts, a real forked process, LitServe's real response-buffer
items and answer transport; that LitServe's own workers are forked, named and replaced under
a real server, and a killed worker's requests answered at once, is in
``test_serve_reliability.py`` (:func:`benchmarks.reliability.worker_pids` finds them by
:data:`WORKER_NAME`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import types

import psutil
from litserve.transport.process_transport import MPQueueTransport
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem

from serve.litserve_workers import (
    MONITOR_INTERVAL_S,
    WORKER_NAME,
    ForkingMultiprocessing,
    NoticeTransport,
    WorkerLost,
    answer_lost,
    fork_workers,
    name_worker,
    preload,
)


def test_spawn_is_answered_with_fork_and_everything_else_is_multiprocessing() -> None:
    forking = ForkingMultiprocessing()
    assert forking.get_context("spawn").get_start_method() == "fork"
    assert forking.get_context("forkserver").get_start_method() == "forkserver"
    assert forking.Manager is multiprocessing.Manager and forking.Value is multiprocessing.Value


def test_fork_workers_swaps_the_servers_multiprocessing_preloads_and_checks_workers_often() -> None:
    module = types.ModuleType("litserve_server_like")
    vars(module)["mp"] = multiprocessing
    server = types.SimpleNamespace(monitor_internal=2)
    fork_workers(server, module)
    assert vars(module)["mp"].get_context("spawn").get_start_method() == "fork"
    assert server.monitor_internal == MONITOR_INTERVAL_S < 2
    assert "serve.litserve_metrics" in sys.modules


def test_preload_skips_what_is_not_installed() -> None:
    assert preload(("json", "no_such_module_here")) == ["json"]


def _named_then_wait(
    ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    if name_worker():
        ready.set()
    done.wait(30)


def test_a_worker_names_itself_for_ps_and_psutil() -> None:
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_named_then_wait, args=(ready, done))
    child.start()
    try:
        assert ready.wait(30), "the worker could not name itself"
        assert psutil.Process(child.pid).name() == WORKER_NAME
        assert psutil.Process().name() != WORKER_NAME  # only the worker
    finally:
        done.set()
        child.join(30)
    assert child.exitcode == 0


def test_a_dead_workers_unanswered_requests_get_a_503_and_the_others_are_left_alone() -> None:
    """LitServe's response-buffer items (real ones): worker 0 took two, worker 1 one, one is answered."""
    held = [ResponseBufferItem(asyncio.Event(), worker_id=0) for _ in range(2)]
    answered = ResponseBufferItem(asyncio.Event(), worker_id=0, response=("ok", LitAPIStatus.OK))
    answered.event.set()
    other, queued = ResponseBufferItem(asyncio.Event(), worker_id=1), ResponseBufferItem(asyncio.Event())
    buffer = {"a": held[0], "b": held[1], "c": answered, "d": other, "e": queued}
    assert answer_lost(buffer, 0) == 2
    for item in held:
        error, status = item.response
        assert item.event.is_set() and status == LitAPIStatus.ERROR and isinstance(error, WorkerLost)
        assert error.status_code == 503 and error.headers == {"Retry-After": "1"}
        assert error.error.body()["type"] == "ServiceUnavailable" and "worker 0" in error.detail
    assert answered.response == ("ok", LitAPIStatus.OK)
    assert not other.event.is_set() and not queued.event.is_set()


def test_a_notice_on_litserves_real_queue_answers_the_lost_requests_and_messages_pass_through() -> None:
    """LitServe's own transport (``multiprocessing`` manager queues), as the API server reads it."""
    with multiprocessing.Manager() as manager:
        held = ResponseBufferItem(asyncio.Event(), worker_id=1)
        notices = NoticeTransport(MPQueueTransport(manager, [manager.Queue()]), {"uid": held})
        answer = ("uid2", (("body", 200), LitAPIStatus.OK, LoopResponseType.REGULAR, 0))
        notices.send(answer, consumer_id=0)
        notices.notify_lost(1, consumers=1)
        notices.send(answer, consumer_id=0)

        async def read_three() -> list[object]:
            return [await notices.areceive(0) for _ in range(3)]

        assert asyncio.run(read_three()) == [answer, None, answer]  # in order; the notice is no message
        assert held.event.is_set() and isinstance(held.response[0], WorkerLost)
        notices.close(send_sentinel=False)
