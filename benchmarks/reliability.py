"""Load plumbing of ``make bench-reliability`` and of tests/serve/test_serve_reliability.py.

Plain threads and ``http.client`` against a running server (either runtime's handle):
one request with its outcome (:func:`post`), closed-loop users for a while
(:func:`closed_loop`), clients that send their bodies at a crawl (:class:`SlowClients`),
the server's worker processes (:func:`worker_pids`), its memory (:func:`rss_mib`,
:func:`worker_rss_mib`) and the CPU time it used (:func:`cpu_seconds`).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from serve.launcher import TorchServe as Server
from serve.litserve_workers import WORKER_NAME

__all__ = [
    "Outcome",
    "Server",
    "SlowClients",
    "backoff_s",
    "closed_loop",
    "cpu_seconds",
    "is_worker",
    "percentile",
    "post",
    "rss_mib",
    "with_config",
    "worker_pids",
    "worker_rss_mib",
]


@dataclass(frozen=True)
class Outcome:
    """One request: HTTP status (``0``: no answer), client-side seconds, body, ``Retry-After``."""

    status: int
    seconds: float
    body: bytes = b""
    retry_after: str | None = None
    error: str = ""


def post(url: str, data: bytes, *, timeout: float = 30.0) -> Outcome:
    """POST ``data`` as ``application/octet-stream``; never raises (a failure is status ``0``)."""
    parts, started = urlsplit(url), time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path, body=data, headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = resp.read()
        return Outcome(resp.status, time.monotonic() - started, body, resp.getheader("Retry-After"))
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(0, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def backoff_s(outcome: Outcome) -> float:
    """How long a polite client waits after ``outcome``: its ``Retry-After`` after a 429/503
    (1 s when the refusal names none, or an HTTP date), else nothing."""
    if outcome.status not in (429, 503):
        return 0.0
    try:
        return max(0.0, float(outcome.retry_after or 1))
    except ValueError:
        return 1.0


def closed_loop(
    url: str,
    images: Sequence[bytes],
    users: int,
    seconds: float,
    *,
    timeout: float = 30.0,
    polite: bool = False,
) -> list[tuple[float, Outcome]]:
    """``users`` threads each sending the next image as soon as the last was answered.

    ``polite`` users wait :func:`backoff_s` after a refusal, as ``Retry-After`` asks; the
    others send again at once. Returns ``(monotonic start time, outcome)`` for every request,
    sorted by start time.
    """
    stop_at, lock = time.monotonic() + seconds, threading.Lock()
    counter, done = itertools.count(), []

    def user() -> None:
        while (started := time.monotonic()) < stop_at:
            outcome = post(url, images[next(counter) % len(images)], timeout=timeout)
            with lock:
                done.append((started, outcome))
            if polite:
                time.sleep(min(backoff_s(outcome), max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=user, daemon=True) for _ in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 30)
    return sorted(done, key=lambda pair: pair[0])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; ``nan`` when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class SlowClients:
    """``n`` connections that each announce a body and send it one byte every ``interval`` s.

    Each reconnects when the server closes it (a read timeout), so the pressure stays on;
    :attr:`closed` counts the connections the server ended.
    """

    def __init__(self, url: str, n: int, *, body_size: int = 100_000, interval: float = 1.0) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {self.address[0]}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {body_size}\r\n\r\n"
        ).encode()
        self.interval, self.closed = interval, 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._crawl, daemon=True) for _ in range(n)]

    def _crawl(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=5) as sock:
                sock.sendall(self.head)
                while not self._stop.wait(self.interval):
                    sock.sendall(b"\0")
                return
            self.closed += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> SlowClients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def with_config(mar: Path, out: Path, **changes: object) -> Path:
    """A copy of ``mar`` at ``out`` with ``changes`` made to its ``model-config.yaml``."""
    import yaml

    with zipfile.ZipFile(mar) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "model-config.yaml":
                data = yaml.safe_dump(yaml.safe_load(data) | changes).encode()
            dst.writestr(item, data)
    return out


def _group(server: Server) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == server.process.pid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def is_worker(proc: psutil.Process) -> bool:
    """A model worker: TorchServe's Python worker, or LitServe's (named by :mod:`serve.litserve_workers`)."""
    try:
        return proc.name() == WORKER_NAME or "model_service_worker.py" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def worker_pids(server: Server) -> list[int]:
    """The pids of the model's workers (TorchServe's Python workers, LitServe's inference workers)."""
    return sorted(p.pid for p in _group(server) if is_worker(p))


def worker_rss_mib(pid: int) -> float:
    """The RSS of the largest model worker under ``pid`` (MiB; 0 when none is found)."""
    sizes = [0]
    for proc in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if is_worker(proc):
                sizes.append(proc.memory_info().rss)
    return max(sizes) / 2**20


def cpu_seconds(server: Server) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server's processes: workers, the rest, and exited ones.

    Exited processes count once their parent has reaped them (its children's times).
    """
    spent = {"workers": 0.0, "other": 0.0, "exited": 0.0}
    for proc in _group(server):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            spent["workers" if is_worker(proc) else "other"] += times.user + times.system
            spent["exited"] += times.children_user + times.children_system
    return spent


def rss_mib(server: Server) -> tuple[float, float]:
    """``(frontend, workers)`` RSS in MiB: the JVM or LitServe's API side, and the model workers."""
    front = work = 0
    for proc in _group(server):
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            if is_worker(proc):
                work += rss
            elif "lifeline" not in " ".join(proc.info.get("cmdline") or []):
                front += rss
    return front / 2**20, work / 2**20
