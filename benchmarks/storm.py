"""Storms of huge 16-bit PNGs against a running TorchServe: shared by the test and the benchmark.

A 16-bit PNG of a smooth gradient is ~100-500 KB on the wire and tens of megapixels once
decoded: the cheapest way to make a server spend memory.
"""

from __future__ import annotations

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
