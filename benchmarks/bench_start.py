"""LitServe's start-to-ready and worker RSS on the torch-free core, with and without torch importable.

``python -m benchmarks.bench_start --mar model_store/brain_mri.mar [--repeat 3]``

Starts the real LitServe app (``serve.litserve_app``) on an ONNX ``.mar`` ``--repeat`` times in
each of two settings and stops it after its first served prediction:

* ``no torch``: ``import torch`` fails in the server and its workers (a ``sitecustomize`` on
  ``PYTHONPATH`` blocks it), as in the lean image (``dockerfiles/serve-lite.dockerfile``,
  which has no torch at all);
* ``torch installed``: the project's environment as it is (LitServe itself imports torch when
  it can, whatever the core needs).

Reports start-to-ready (process start to the first successful prediction, the launcher's
``started_in``), the CPU seconds its processes used until then (wall time depends on what
else the machine runs; CPU time much less) and the inference worker's RSS once ready, into docs/benchmarks.md
("LitServe start and memory") and ``reports/bench_start.json``. No load is applied: the
side-by-side load run is ``make bench-serve``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.docsection import save_report, write_section
from benchmarks.reliability import cpu_seconds, worker_rss_mib
from serve.ports import free_port
from serve.runtimes import start_litserve

BLOCKER = """import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "lightning"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
"""


def one_start(mar: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    """Start LitServe on ``mar``, wait for a served prediction, measure, stop."""
    port, metrics = free_port(), free_port()
    with start_litserve(mar, work, timeout=300, env=env, inference_port=port, metrics_port=metrics) as server:
        cpu = cpu_seconds(server)
        return {
            "ready_s": server.started_in,
            "cpu_s": sum(cpu.values()),
            "worker_cpu_s": cpu["workers"],
            "worker_rss_mib": worker_rss_mib(server.process.pid),
        }


def measure(mar: Path, repeat: int) -> dict[str, list[dict[str, float]]]:
    """``repeat`` starts in each setting."""
    results: dict[str, list[dict[str, float]]] = {"no torch": [], "torch installed": []}
    with tempfile.TemporaryDirectory() as tmp:
        blocker = Path(tmp) / "blocker"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text(BLOCKER)
        repo = str(Path(__file__).resolve().parents[1])
        envs = {"no torch": {"PYTHONPATH": f"{blocker}:{repo}"}, "torch installed": {"PYTHONPATH": repo}}
        for i in range(repeat):
            for name, env in envs.items():
                results[name].append(one_start(mar, Path(tmp) / f"{name.replace(' ', '_')}{i}", env))
                print(name, results[name][-1], flush=True)
    return results


def spread(values: list[float], digits: int) -> str:
    """``median (min-max)`` of ``values``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """The markdown rows: median and range of each figure per setting."""
    rows = [
        "| LitServe on the int8 .mar | start-to-ready s | CPU s to ready, all processes | "
        "of which inference workers | worker RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        cells = [spread([r[key] for r in runs], digits) for key, digits in
                 (("ready_s", 1), ("cpu_s", 2), ("worker_cpu_s", 2), ("worker_rss_mib", 0))]  # fmt: skip
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure, write the section and the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--note", default="", help="how the machine was loaded (printed in the doc)")
    args = parser.parse_args(argv)
    if not args.mar.is_file():
        sys.exit(f"bench_start: no model archive at {args.mar} (build one: make mar)")
    load_before = os.getloadavg()[0]
    results = measure(args.mar, args.repeat)
    command = "python -m benchmarks.bench_start " + shlex.join(sys.argv[1:] if argv is None else argv)
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    text = (
        f"Command: `{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{load}. {args.note}\n\nMedian (range) of {args.repeat} starts each.\n\n{table(results)}\n"
    )
    write_section("bench-start", text)
    report: dict[str, Any] = {"mar": str(args.mar), "results": results}
    save_report("bench_start", report)
    print(text)


if __name__ == "__main__":
    main()
