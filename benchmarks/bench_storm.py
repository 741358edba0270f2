"""``make bench-storm``: eight concurrent huge 16-bit PNGs against the served ``.mar``.

Starts TorchServe on ``--mar`` (default ``model_store/brain_mri.mar``), then sends two
storms of eight concurrent 16-bit gradient PNGs with a real scan in the middle of each:
49 Mpx (7000 x 7000, over the pixel cap: refused from the header) and 16.8 Mpx (4096 x
4096, at the cap: decoded). Records each answer's status and time (client side, loopback:
an upper bound of the server's), the scan's status, and the model worker's RSS before and
at its peak (sampled every 10 ms). The archive is served with ONE worker (its
``model-config.yaml`` rewritten), so every request of the storm lands on the worker
measured: the worst case of the default two. The table replaces the ``bench-storm`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.docsection import write_section
from benchmarks.reliability import with_config
from benchmarks.storm import PeakRSS, png16, storm, worker_of
from lightning_app.data.sources import embedded_br35h
from serve.launcher import free_port, start_torchserve


def one_worker(mar: Path, out: Path) -> Path:
    """A copy of ``mar`` whose ``model-config.yaml`` asks for exactly one worker."""
    return with_config(mar, out, minWorkers=1, maxWorkers=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    scan = (embedded_br35h() / "yes" / "y0.jpg").read_bytes()
    cases = [("7000 x 7000 (49.0 Mpx)", png16(7000, 7000)), ("4096 x 4096 (16.8 Mpx)", png16(4096, 4096))]
    rows = []
    with (
        tempfile.TemporaryDirectory() as work,
        start_torchserve(
            one_worker(args.mar, Path(work) / args.mar.name),
            Path(work),
            inference_port=free_port(),
            management_port=free_port(),
            metrics_port=free_port(),
        ) as server,
    ):
        worker = worker_of(server.process.pid)
        before = worker.memory_info().rss
        for label, body in cases:
            sampler = PeakRSS(worker)
            answers, scan_status = storm(server.predict_url, body, scan)
            peak = sampler.stop()
            statuses = ", ".join(sorted({str(code) for code, _, _ in answers}))
            slowest = max(seconds for _, seconds, _ in answers)
            rows.append(
                f"| {label}, {len(body) / 1024:.0f} KB each | {statuses} | {slowest:.2f} | {scan_status} "
                f"| {before / 2**20:.0f} | {peak / 2**20:.0f} |"
            )
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            f"`make bench-storm` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}; "
            f"`{args.mar}` served by 1 worker (all 8 land on it); "
            "8 concurrent 16-bit PNGs + 1 real scan mid-storm.",
            "",
            "| storm | statuses | slowest answer s | scan mid-storm | worker RSS before MiB "
            "| worker peak RSS MiB |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(text)
    if not args.no_doc:
        write_section("bench-storm", text)


if __name__ == "__main__":
    main()
