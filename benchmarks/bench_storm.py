"""``make bench-storm``: eight concurrent huge 16-bit PNGs against the served ``.mar``, per runtime.

Starts each runtime (``--runtime``: TorchServe, LitServe or both, one after the other) on
``--mar`` (default ``model_store/brain_mri.mar``), then sends two storms of eight
concurrent 16-bit gradient PNGs with a real scan in the middle of each: 49 Mpx (7000 x
7000, over the pixel cap: refused from the header) and 16.8 Mpx (4096 x 4096, at the cap:
decoded). Records each answer's status and time (client side, loopback: an upper bound of
the server's), the scan's status, and the RSS of every process of the server's tree before
and at its peak (sampled every 10 ms): the largest process (the model worker), the whole
tree at one instant, and each process. The archive is served with ONE worker (its
``model-config.yaml`` rewritten), so every request of the storm lands on the worker
measured: the worst case of the default two. The tables replace the ``bench-storm`` section
of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.docsection import write_section
from benchmarks.reliability import with_config
from benchmarks.storm import TreePeak, png16, storm
from lightning_app.data.sources import embedded_br35h
from serve.ports import free_port
from serve.runtimes import RUNTIMES, start

MIB = 2**20


def one_worker(mar: Path, out: Path) -> Path:
    """A copy of ``mar`` whose ``model-config.yaml`` asks for exactly one worker."""
    return with_config(mar, out, minWorkers=1, maxWorkers=1)


def run(runtime: str, mar: Path, cases: list[tuple[str, bytes]], scan: bytes) -> tuple[list[str], list[str]]:
    """Both storms against ``runtime``: the summary rows and the per-process rows."""
    rows, processes = [], []
    with (
        tempfile.TemporaryDirectory() as work,
        start(
            runtime, one_worker(mar, Path(work) / mar.name), Path(work), inference_port=free_port(),
            management_port=free_port(), metrics_port=free_port(), timeout=300,
        ) as server,
    ):  # fmt: skip
        before = TreePeak(server.process.pid).stop()
        for label, body in cases:
            sampler = TreePeak(server.process.pid)
            answers, scan_status = storm(server.predict_url, body, scan)
            peak = sampler.stop()
            statuses = ", ".join(sorted({str(code) for code, _, _ in answers}))
            slowest = max(seconds for _, seconds, _ in answers)
            key = max(peak.peaks, key=lambda k: peak.peaks[k])
            largest = f"{key[1]}: {before.peaks.get(key, 0) / MIB:.0f} -> {peak.peaks[key] / MIB:.0f}"
            rows.append(
                f"| {server.runtime} | {label}, {len(body) / 1024:.0f} KB each | {statuses} | {slowest:.2f} "
                f"| {scan_status} | {largest} | {before.total / MIB:.0f} -> {peak.total / MIB:.0f} |"
            )
            print(rows[-1], flush=True)
            for (pid, name), value in sorted(peak.peaks.items(), key=lambda item: -item[1]):
                processes.append(
                    f"| {server.runtime} | {label.split(' (')[0]} | {name} | "
                    f"{before.peaks.get((pid, name), 0) / MIB:.0f} | {value / MIB:.0f} |"
                )
    return rows, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"))
    parser.add_argument("--runtime", choices=[*RUNTIMES, "both"], default="both")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    scan = (embedded_br35h() / "yes" / "y0.jpg").read_bytes()
    cases = [("7000 x 7000 (49.0 Mpx)", png16(7000, 7000)), ("4096 x 4096 (16.8 Mpx)", png16(4096, 4096))]
    rows, processes = [], []
    for runtime in RUNTIMES if args.runtime == "both" else [args.runtime]:
        summary, per_process = run(runtime, args.mar, cases, scan)
        rows += summary
        processes += per_process
    command = "make bench-storm" + ("" if args.runtime == "both" else f" STORM_RUNTIME={args.runtime}")
    text = "\n".join(
        [
            f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}; "
            f"`{args.mar}` served by 1 worker (all 8 land on it); "
            "8 concurrent 16-bit PNGs + 1 real scan mid-storm.",
            "",
            "| runtime | storm | statuses | slowest answer s | scan mid-storm "
            "| largest process: RSS before -> peak MiB | whole server: RSS before -> peak MiB |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Each process of the server at the storm's peak:",
            "",
            "| runtime | storm | process | RSS before MiB | peak RSS MiB |",
            "|---|---|---|---|---|",
            *processes,
        ]
    )
    print(text)
    if not args.no_doc:
        write_section("bench-storm", text)


if __name__ == "__main__":
    main()
