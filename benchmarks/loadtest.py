"""Load-test plumbing of ``make bench-serve`` (and ``make bench-explain``): locust headless
against a running server, the real test images it rotates over, the server's peak RSS, and the
seed-style FastAPI baseline started and loaded (:func:`run_fastapi`), and the lines its table
and summaries print (:func:`row`, :func:`cpu_split`, :func:`pairs_line`)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from lightning_app.data import manifest

REPO = Path(__file__).resolve().parents[1]


class PeakRSS:
    """Sample the RSS of a process and its descendants every 0.2 s; keep the peak."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> int:
        """Stop sampling; return the peak in bytes."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


def image_folder(data: Path, work: Path) -> Path:
    """A folder of links to ``data``'s test-split images (the load test rotates over them)."""
    folder = work / "test-images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(manifest.split_rows(data, "test")):
        source = (data / r.path).resolve()
        (folder / f"{i:04d}{source.suffix.lower()}").symlink_to(source)
    return folder


def locust(host: str, target: str, users: int, duration: int, out: Path) -> dict[str, float]:
    """Run locust headless; return the aggregated row of its stats CSV."""
    prefix = out / f"locust-{target}"
    cmd = [
        str(Path(sys.executable).with_name("locust")), "-f", str(REPO / "serve" / "locustfile.py"),
        "--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s", "--stop-timeout", "10",
        "--host", host, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "LOADTEST_TARGET": target, "LOADTEST_LIMIT": "0"}
    subprocess.run(cmd, env=env, check=False, timeout=duration + 120, capture_output=True)
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {
        "requests": float(row["Request Count"]),
        "failures": float(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
    }


def run_fastapi(export_dir: Path, work: Path, users: int, duration: int) -> dict[str, Any]:
    """The seed-style baseline (:mod:`benchmarks.fastapi_baseline`) under uvicorn, loaded by locust."""
    import httpx

    from serve.launcher import probe_image
    from serve.ports import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "benchmarks.fastapi_baseline:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    started, env = time.monotonic(), {**os.environ, "EXPORT_DIR": str(export_dir)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the FastAPI baseline did not start")
            try:
                files = {"file": ("probe.png", probe_image(), "image/png")}
                if httpx.post(f"http://127.0.0.1:{port}/predict", files=files, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        ready = time.monotonic() - started
        rss = PeakRSS(proc.pid)
        result = locust(f"http://127.0.0.1:{port}", "fastapi", users, duration, work)
        result["peak_rss_mib"] = rss.stop() / 2**20
        result["ready_s"] = ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return result


def row(name: str, r: dict[str, Any]) -> str:
    """One server's line of the bench-serve table (RPS, latency, failures, RSS, start)."""
    latency = f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f}"
    failures = f"{int(r['failures'])}/{int(r['requests'])}"
    return (
        f"| {name} | {r['rps']:.1f} | {latency} | {failures} | {r['peak_rss_mib']:.0f} | {r['ready_s']:.1f} |"
    )


def cpu_split(r: dict[str, Any]) -> str:
    """``"5.1 (workers 4.3, the rest 0.8)"``: a run's server CPU ms per request."""
    workers, other = r["cpu_workers_ms"], r["cpu_other_ms"]
    return f"{workers + other:.2f} (workers {workers:.2f}, the rest {other:.2f})"


def pairs_line(pairs: list[tuple[dict[str, Any], dict[str, Any]]], duration: int) -> str:
    """Requests/s and p95 of alternating TorchServe/LitServe runs, and LitServe's share in each pair."""
    ratios = sorted(lit["rps"] / ts["rps"] for ts, lit in pairs)

    def listed(runtime: int, key: str) -> str:
        return ", ".join(f"{pair[runtime][key]:.{1 if key == 'rps' else 0}f}" for pair in pairs)

    return (
        f"TorchServe then LitServe, {len(pairs)} pairs of {duration} s (the table: the first): "
        f"requests/s TorchServe {listed(0, 'rps')}, LitServe {listed(1, 'rps')}; p95 ms TorchServe "
        f"{listed(0, 'p95_ms')}, LitServe {listed(1, 'p95_ms')}; LitServe/TorchServe "
        f"{ratios[0]:.1%}-{ratios[-1]:.1%} (median {ratios[len(ratios) // 2]:.1%})."
    )
