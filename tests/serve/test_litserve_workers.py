"""LitServe's workers forked from the server process: the start method, the preload, the name, the batching.

Real ``multiprocessing`` contexts and a real forked process; that LitServe's own workers are
forked, named and replaced under a real server is in ``test_serve_reliability.py``
(:func:`benchmarks.reliability.worker_pids` finds them by :data:`WORKER_NAME`). The batching
loop reads a real ``multiprocessing.Manager`` queue, as in LitServe; the transport is a list
that records what the loop sends (LitServe's own transports need a running server).
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
import types
from typing import Any

import psutil
import pytest
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.utils import LitAPIStatus

from serve.litserve_workers import (
    MONITOR_INTERVAL_S,
    WORKER_NAME,
    FirstRequestBatchedLoop,
    ForkingMultiprocessing,
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
