"""Storms of huge 16-bit PNGs against a running TorchServe: shared by the test and the benchmark.

A 16-bit PNG of a smooth gradient is ~100-500 KB on the wire and tens of megapixels once
decoded: the cheapest way to make a server spend memory.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
from PIL import Image


def png16(width: int, height: int) -> bytes:
    """A 16-bit grayscale PNG of a diagonal gradient (small file, full 16-bit range)."""
    ramp = (np.add.outer(np.arange(height, dtype=np.uint32), np.arange(width, dtype=np.uint32)) * 7) % 65536
    buffer = io.BytesIO()
    Image.fromarray(ramp.astype(np.uint16)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def worker_of(server_pid: int) -> psutil.Process:
    """TorchServe's Python model worker under the launcher's process tree."""
    for proc in psutil.Process(server_pid).children(recursive=True):
        if any("model_service_worker" in part for part in proc.cmdline()):
            return proc
    raise AssertionError("no TorchServe model worker found")


class PeakRSS:
    """Sample one process's RSS every 10 ms until stopped; ``peak`` in bytes."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc, self.peak, self._stop = proc, proc.memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        """Stop sampling; return the peak."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def role(proc: psutil.Process, root_pid: int) -> str:
    """A short name for one process of a server's tree (TorchServe's or LitServe's)."""
    try:
        line, name = " ".join(proc.cmdline()), proc.name()
    except psutil.Error:
        return "gone"
    if "model_service_worker" in line:
        return "TorchServe worker"
    if name == "java":
        return "TorchServe frontend (JVM)"
    if name == "litserve-worker" or "multiprocessing.spawn" in line:  # forked and named, or spawned
        return "LitServe inference worker"
    for mark, label in (("lifeline", "watchdog"), ("resource_tracker", "multiprocessing resource tracker")):
        if mark in line:  # the watchdog's command line names the server it runs
            return label
    if "serve.litserve_app" in line:
        with contextlib.suppress(psutil.Error):
            if proc.ppid() == root_pid or proc.pid == root_pid:
                return "LitServe main"
        return "LitServe fork of main (API server, manager)"
    return name


class TreePeak:
    """Sample the RSS of a process and all its descendants every 10 ms until stopped.

    ``peaks``: each process's own peak (bytes, by ``(pid, role)``); ``total``: the largest sum
    over the tree at one sample. The tree is re-listed every 0.5 s (workers may restart).
    """

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peaks: dict[tuple[int, str], int] = {}
        self.total = 0
        self._procs = self._tree()
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[tuple[psutil.Process, str]]:
        procs = [self.root, *self.root.children(recursive=True)]
        return [(p, role(p, self.root.pid)) for p in procs]

    def _sample(self) -> None:
        total = 0
        for proc, name in self._procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            key = (proc.pid, name)
            self.peaks[key] = max(self.peaks.get(key, 0), rss)
            total += rss
        self.total = max(self.total, total)

    def _run(self) -> None:
        listed = time.monotonic()
        while not self._stop.wait(0.01):
            if time.monotonic() - listed > 0.5:
                with contextlib.suppress(psutil.Error):
                    self._procs, listed = self._tree(), time.monotonic()
            self._sample()

    def stop(self) -> TreePeak:
        """Stop sampling; return ``self`` (``peaks``, ``total``)."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self


def storm(url: str, body: bytes, scan: bytes) -> tuple[list[tuple[int, float, str]], int]:
    """Eight concurrent ``body`` posts plus one real scan sent mid-storm: answers and the scan's status."""

    def post(data: bytes) -> tuple[int, float, str]:
        start = time.monotonic()
        response = httpx.post(url, content=data, headers={"Content-Type": "image/png"}, timeout=60)
        return response.status_code, time.monotonic() - start, response.text

    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(post, body) for _ in range(8)]
        time.sleep(0.05)
        normal = pool.submit(post, scan)
        return [f.result() for f in futures], normal.result()[0]
