"""``make bench-queues``: what LitServe's ``multiprocessing.Manager`` queues cost, and what they buy.

LitServe (0.2.x) passes every request to its inference workers, and every answer back, through
``Manager().Queue()`` proxies: each put and get is a round trip to the manager process. A plain
``multiprocessing.Queue`` skips that hop. Two measurements, per kind of queue:

1. **cost:** the round trip of one scan-sized message (``--payload`` bytes) to an echo process
   and back, wall time and the caller's CPU, median of ``--rounds`` rounds;
2. **a killed consumer:** a consumer process waiting in ``get`` is SIGKILLed (as a crashed
   inference worker is) and a replacement is started on the same queue (as LitServe's
   ``restart_workers`` does); how many of ``--items`` items the replacement then receives.

A ``multiprocessing.Queue`` consumer holds the queue's read lock while it waits, so one killed
while idle leaves it locked for good, and the replacement never receives. The manager keeps the
queue in its own process, so the replacement goes on; an item may still go to the dead
consumer's pending ``get`` (the reason ``serve/litserve_workers.py`` bounds each wait).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.docsection import write_section

KINDS = ("multiprocessing.Queue", "Manager().Queue")


def _echo(inbox: Any, outbox: Any) -> None:
    while (item := inbox.get()) is not None:
        outbox.put(item)


def _consume(inbox: Any, outbox: Any) -> None:
    outbox.put((os.getpid(), "ready"))
    while True:
        outbox.put((os.getpid(), inbox.get()))


def _queues(ctx: Any, kind: str) -> tuple[Any, Any]:
    """A factory of queues of ``kind``, and the manager behind them (``None`` for plain queues)."""
    if kind == KINDS[0]:
        return ctx.Queue, None
    manager = ctx.Manager()
    return manager.Queue, manager


def round_trip(kind: str, payload: int, n: int, rounds: int) -> dict[str, float]:
    """Median microseconds (wall, caller CPU) for one message to an echo process and back."""
    ctx = mp.get_context("spawn")
    make, manager = _queues(ctx, kind)
    inbox, outbox = make(), make()
    echo = ctx.Process(target=_echo, args=(inbox, outbox), daemon=True)
    echo.start()
    message, walls, cpus = b"x" * payload, [], []
    try:
        for _ in range(rounds + 1):  # the first round warms up
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                inbox.put(message)
                outbox.get(timeout=30)
            walls.append((time.perf_counter() - wall) / n * 1e6)
            cpus.append((time.process_time() - cpu) / n * 1e6)
        inbox.put(None)
        echo.join(10)
    finally:
        echo.kill()
        if manager is not None:
            manager.shutdown()
    return {"wall_us": statistics.median(walls[1:]), "cpu_us": statistics.median(cpus[1:])}


def after_a_kill(kind: str, items: int, wait: float = 5.0) -> int:
    """Items a replacement consumer receives after the first one was SIGKILLed while it waited in ``get``.

    As LitServe does with a dead inference worker: the replacement is started on the same queue.
    """
    ctx = mp.get_context("spawn")
    make, manager = _queues(ctx, kind)
    inbox, outbox = make(), ctx.Queue()
    consumers = [ctx.Process(target=_consume, args=(inbox, outbox), daemon=True) for _ in range(2)]
    received = 0
    try:
        for consumer in consumers:
            consumer.start()
            outbox.get(timeout=60)  # it says it is ready just before its first get
            time.sleep(0.5)  # so it is waiting in get
            if consumer is consumers[0]:
                os.kill(consumer.pid or 0, signal.SIGKILL)
                consumer.join(10)
        for i in range(items):
            inbox.put(i)
        deadline = time.monotonic() + wait
        while received < items and time.monotonic() < deadline:
            try:
                outbox.get(timeout=max(0.01, deadline - time.monotonic()))
                received += 1
            except queue.Empty:
                break
    finally:
        for c in consumers:
            c.kill()
        if manager is not None:
            manager.shutdown()
    return received


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure both kinds of queue, print the table, and write it to docs/benchmarks.md."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_queues", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--payload", type=int, default=30_000, help="message bytes (a Br35H JPEG is 5-60 kB)")
    parser.add_argument("--n", type=int, default=1000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=4, help="items sent after the kill")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = {
        kind: {
            **round_trip(kind, args.payload, args.n, args.rounds),
            "received": after_a_kill(kind, args.items),
        }
        for kind in KINDS
    }
    command = " ".join(["python -m benchmarks.bench_queues", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} vCPU, "
        f"Python {platform.python_version()}; {args.payload:,} B messages, median of {args.rounds} rounds "
        f"of {args.n} round trips.",
        "",
        "| queue | round trip us (wall) | caller CPU us | received by a killed idle consumer's replacement |",
        "|---|---|---|---|",
    ]
    for kind, r in result.items():
        lines.append(
            f"| `{kind}` | {r['wall_us']:.0f} | {r['cpu_us']:.0f} | {r['received']} of {args.items} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        write_section("bench-queues", text)
    return result


if __name__ == "__main__":
    main()
