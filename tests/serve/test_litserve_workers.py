"""LitServe's workers forked from the server process: the start method, the preload, the name,
the batching, and the answer to the requests a dead worker held.

Real ``multiprocessing`` contexts, a real forked process, LitServe's real response-buffer
items and answer transport; that LitServe's own workers are forked, named and replaced under
a real server, and a killed worker's requests answered at once, is in
``test_serve_reliability.py`` (:func:`benchmarks.reliability.worker_pids` finds them by
:data:`WORKER_NAME`). The batching loop reads a real ``multiprocessing.Manager`` queue, as in
LitServe; the transport there is a list that records what the loop sends.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
import types
from typing import Any

import psutil
import pytest
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.transport.process_transport import MPQueueTransport
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem

from serve.litserve_workers import (
    BUNDLE,
    MONITOR_INTERVAL_S,
    WORKER_NAME,
    FirstRequestBatchedLoop,
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


def test_a_bundle_on_litserves_real_queue_reaches_litserve_as_its_messages_in_order() -> None:
    """A worker's bundle (its batch's answers in one put) and lone messages, as the API server reads them."""
    with multiprocessing.Manager() as manager:
        notices = NoticeTransport(MPQueueTransport(manager, [manager.Queue()]), {})
        answers = [(uid, (("body", 200), LitAPIStatus.OK, LoopResponseType.REGULAR, 0)) for uid in "abcd"]
        notices.send(answers[0], consumer_id=0)
        notices.send((BUNDLE, answers[1:3]), consumer_id=0)
        notices.send(answers[3], consumer_id=0)

        async def read(n: int) -> list[object]:
            return [await notices.areceive(0) for _ in range(n)]

        assert asyncio.run(read(4)) == answers
        notices.close(send_sentinel=False)


class Sent:
    """A transport that keeps what is sent (``(uid, (data, status, type, worker))``)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, item: Any, consumer_id: int) -> None:
        self.messages.append(item)


def api(batch: int = 8, delay: float = 0.2, timeout: float = 30) -> Any:
    return types.SimpleNamespace(max_batch_size=batch, batch_timeout=delay, request_timeout=timeout)


def test_the_batch_window_opens_at_the_first_request_not_when_the_worker_starts_waiting() -> None:
    with multiprocessing.Manager() as manager:
        queue, sent, loop = manager.Queue(), Sent(), FirstRequestBatchedLoop()
        loop._restart_workers = True  # as LitServe sets it with restart_workers=True: start messages sent

        def requests_later() -> None:  # LitServe's loop: windows [0, 0.5], [0.5, 1.0] s, ...
            time.sleep(0.75)  # "a" in the middle of the second window
            queue.put((0, "a", time.monotonic(), "x-a"))
            time.sleep(0.4)  # "b" after that window closed, within 0.5 s of "a"
            queue.put((0, "b", time.monotonic(), "x-b"))

        thread = threading.Thread(target=requests_later)
        thread.start()
        batch: list[Any] = []
        timed_out: list[Any] = []
        deadline = time.monotonic() + 10
        while not batch and time.monotonic() < deadline:
            batch, timed_out = loop.get_batch_requests(api(delay=0.5), queue, sent)
        thread.join()
        assert [uid for _, uid, _ in batch] == ["a", "b"], "both requests in one batch"
        assert timed_out == []
        started = [(uid, message[1]) for uid, message in sent.messages]
        assert started == [("a", LitAPIStatus.START), ("b", LitAPIStatus.START)]


def test_a_full_batch_closes_at_once_and_stale_requests_time_out() -> None:
    with multiprocessing.Manager() as manager:
        queue, loop = manager.Queue(), FirstRequestBatchedLoop()
        for uid in "abc":
            queue.put((0, uid, time.monotonic() - (60 if uid == "c" else 0), uid))
        started = time.monotonic()
        batch, timed_out = loop.get_batch_requests(api(batch=3, delay=5), queue, Sent())
        assert time.monotonic() - started < 5, "a full batch does not wait for the window"
        assert [uid for _, uid, _ in batch] == ["a", "b"]
        assert timed_out == [(0, "c")]  # waited in the queue longer than the request timeout: 504


def test_the_shutdown_sentinel_stops_the_loop() -> None:
    with multiprocessing.Manager() as manager:
        queue = manager.Queue()
        queue.put(_SENTINEL_VALUE)
        with pytest.raises(_StopLoopError):
            FirstRequestBatchedLoop().get_batch_requests(api(), queue, Sent())


def sent_uids(sent: Sent) -> list[list[tuple[str, Any]]]:
    """What each put carried: ``[(uid, status), ...]`` (one element unless it was a bundle)."""
    puts = [message[1] if message[0] == BUNDLE else [message] for message in sent.messages]
    return [[(uid, body[1]) for uid, body in put] for put in puts]


def test_a_batch_announces_its_requests_in_one_put_and_its_answers_in_one_put() -> None:
    """Each message costs a round trip to LitServe's Manager process at both ends: one per batch."""
    with multiprocessing.Manager() as manager:
        queue, sent, loop = manager.Queue(), Sent(), FirstRequestBatchedLoop()
        loop._restart_workers = True
        for uid in "abc":
            queue.put((0, uid, time.monotonic(), uid))
        batch, _ = loop.get_batch_requests(api(batch=3), queue, sent)
        assert [uid for _, uid, _ in batch] == ["a", "b", "c"]
        starts = [[(uid, LitAPIStatus.START) for uid in "abc"]]
        assert sent_uids(sent) == starts, "announced together, before the model runs"
        for _, uid, _ in batch:  # what LitServe's loop does with the batch's answers
            loop.put_response(sent, 0, uid, "answer", LitAPIStatus.OK, LoopResponseType.REGULAR)
        assert len(sent.messages) == 1, "answers wait for the loop's next turn"
        loop.get_batch_requests(api(), queue, sent)  # the next turn: nothing queued
        assert sent_uids(sent)[1] == [(uid, LitAPIStatus.OK) for uid in "abc"]


def test_a_request_is_announced_while_its_batch_is_still_open() -> None:
    """A long window (``maxBatchDelay``) with one request: its start message leaves within a slice,
    so a worker killed while it waits for more still has its request answered 503 at once."""
    with multiprocessing.Manager() as manager:
        queue, sent, loop = manager.Queue(), Sent(), FirstRequestBatchedLoop()
        loop._restart_workers = True
        queue.put((0, "a", time.monotonic(), "a"))
        gathering = threading.Thread(target=loop.get_batch_requests, args=(api(delay=2.0), queue, sent))
        started = time.monotonic()
        gathering.start()
        while not sent.messages and time.monotonic() - started < 1.5:
            time.sleep(0.01)
        assert sent_uids(sent) == [[("a", LitAPIStatus.START)]], "not announced while the window was open"
        assert gathering.is_alive()
        gathering.join(5)


def test_without_worker_restarts_no_start_messages_are_sent() -> None:
    with multiprocessing.Manager() as manager:
        queue, sent, loop = manager.Queue(), Sent(), FirstRequestBatchedLoop()
        queue.put((0, "a", time.monotonic(), "a"))
        assert [uid for _, uid, _ in loop.get_batch_requests(api(delay=0.05), queue, sent)[0]] == ["a"]
        loop.put_response(sent, 0, "a", "answer", LitAPIStatus.OK, LoopResponseType.REGULAR)
        loop.flush(sent)
        assert sent_uids(sent) == [[("a", LitAPIStatus.OK)]]
