"""Bounded memory: storms of huge 16-bit PNGs against the real TorchServe.

A 16-bit PNG of a smooth gradient is ~100-500 KB on the wire and tens of megapixels once
decoded: the cheapest way to make a server spend memory. Eight at a time must leave the
worker under 1 GiB RSS, each must get an answer (4xx above the pixel cap, 200 at the
cap), and a normal scan sent during the storm must still be served. Timings on this
shared machine are recorded by ``make bench-storm``; only the header refusal is timed here.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.storm import PeakRSS, TreePeak, png16, storm, worker_of
from lightning_app.data.sources import embedded_br35h
from lightning_app.transforms import MAX_PIXELS

GIB = 2**30


@pytest.mark.slow
def test_storms_of_huge_16_bit_pngs_keep_the_worker_under_1_gib_and_serving(served_model) -> None:
    huge, at_cap = png16(7000, 7000), png16(4096, 4096)
    assert 7000 * 7000 > MAX_PIXELS >= 4096 * 4096
    assert len(huge) < 1_000_000 and len(at_cap) < 1_000_000
    scan = (embedded_br35h() / "yes" / "y0.jpg").read_bytes()
    sampler = PeakRSS(worker_of(served_model.process.pid))
    refused, scan_during_refusals = storm(served_model.predict_url, huge, scan)
    served, scan_during_decodes = storm(served_model.predict_url, at_cap, scan)
    peak = sampler.stop()

    for status, seconds, text in refused:  # 49 Mpx: refused from the header, not decoded
        assert status == 400 and "too large: 7000x7000" in text
        assert seconds < 2.0
    for status, _, text in served:  # at the cap: decoded within bounded memory and answered
        assert status == 200, text
    assert scan_during_refusals == 200 and scan_during_decodes == 200
    assert peak < GIB, f"worker peak RSS {peak / 2**20:.0f} MiB"


def test_png16_really_is_a_16_bit_image(tmp_path: Path) -> None:
    image = Image.open(io.BytesIO(png16(300, 200)))
    assert image.mode == "I;16" and image.size == (300, 200)
    assert np.asarray(image).max() > 255


def test_the_benchmark_sampler_sees_each_process_of_a_tree() -> None:
    """``make bench-storm``'s per-process peaks: a grandchild holding 200 MiB is its own row."""
    hold = "import sys; block = b'x' * (200 * 2**20); print('ready', flush=True); sys.stdin.read()"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hold!r}])"
    root = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert root.stdout is not None and root.stdout.readline() == b"ready\n"
        tree = TreePeak(root.pid).stop()
    finally:
        root.communicate(timeout=10)
    peaks = {pid: peak for (pid, _), peak in tree.peaks.items()}
    assert len(peaks) == 2 and peaks[root.pid] < 100 * 2**20
    (held,) = (peak for pid, peak in peaks.items() if pid != root.pid)
    assert held >= 200 * 2**20 and tree.total >= held
