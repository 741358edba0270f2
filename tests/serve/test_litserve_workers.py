"""LitServe's workers forked from the server process: the start method, the preload, the name.

Real ``multiprocessing`` contexts and a real forked process; that LitServe's own workers are
forked, named and replaced under a real server is in ``test_serve_reliability.py``
(:func:`benchmarks.reliability.worker_pids` finds them by :data:`WORKER_NAME`).
"""

from __future__ import annotations

import multiprocessing
import sys
import types

import psutil

from serve.litserve_workers import (
    MONITOR_INTERVAL_S,
    WORKER_NAME,
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
