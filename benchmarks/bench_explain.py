"""``make bench-explain``: where the heatmaps point, what explanations cost, what the OOD block costs.

1. **Hot spot inside the brain** (in-process, the serving code): for every held-out tumour
   scan of the TEST split, is the heatmap's hottest pixel inside the head (a mask of the
   scan: foreground above an Otsu threshold, holes filled, largest component, eroded by 3 px
   so the skull's rim counts as border) rather than on the background or the image border?
2. **Latency at 1 user** (real TorchServe): the same held-out scans sent one at a time,
   alternating ``/predictions`` and ``/explanations``; p50/p95 of each.
3. **What format 3 costs /predictions** (in-process, the served int8 backend): ``engine.predict``
   of the exported artefact (graph with the ``cam`` and ``stage_*`` outputs, the ensemble guard)
   against a format-2 artefact of the same weights (graph with ``logits`` and ``features`` only,
   quantised with the same calibration images, a penultimate-only guard), interleaved rounds.
4. **/predictions throughput with and without the OOD block**: locust (``serve/locustfile.py``)
   against two ``.mar`` of the same weights, one exported with the OOD statistics and one
   without, one after the other (``--users``/``--duration``).

Results: stdout, reports/bench_explain.json, and the ``bench-explain`` markers of
docs/benchmarks.md unless ``--no-doc``.

    uv run python -m benchmarks.bench_explain [--ckpt runs/.../best-*.ckpt] [--data data/br35h]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from benchmarks.bench_ood import wilson
from benchmarks.bench_serve import run_torchserve
from benchmarks.docsection import save_report, write_section
from lightning_app.data import manifest
from lightning_app.data.headmask import head_mask
from lightning_app.export.build import archive, export, newest_best_checkpoint
from lightning_app.inference.artefacts import OOD_STATS
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer
from lightning_app.inference.taps import HEATMAP_METHODS
from serve.launcher import start_torchserve
from serve.ports import free_port

REPO = Path(__file__).resolve().parents[1]

DOC = REPO / "docs" / "benchmarks.md"
OCTET = {"Content-Type": "application/octet-stream"}


def held_out(data: Path, folder: str | None = None) -> list[Path]:
    rows = manifest.split_rows(data, "test")
    return [data / r.path for r in rows if folder is None or r.label == folder]


def hot_spots(engine: InferenceEngine, files: list[Path], method: str | None = None) -> dict[str, Any]:
    explainer = Explainer(engine, method=method)
    inside = 0
    for path in files:
        pixels = engine.decode(path.read_bytes())
        heat = explainer.explain(pixels[None]).maps[0]
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        inside += bool(head_mask(pixels[0], erode=3)[y, x])
    low, high = wilson(inside, len(files))
    return {"inside": inside, "n": len(files), "rate": inside / len(files), "ci95": [low, high]}


def latencies(url: str, files: list[Path], repeats: int) -> dict[str, dict[str, float]]:
    """Sequential (1 user) round trips, alternating the two endpoints."""
    times: dict[str, list[float]] = {"predictions": [], "explanations": []}
    with httpx.Client(timeout=60) as client:
        for path in files[:5]:  # warm-up
            for kind in times:
                client.post(f"{url}/{kind}/brain_mri", content=path.read_bytes(), headers=OCTET)
        for _ in range(repeats):
            for path in files:
                data = path.read_bytes()
                for kind in times:
                    start = time.perf_counter()
                    response = client.post(f"{url}/{kind}/brain_mri", content=data, headers=OCTET)
                    times[kind].append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.text
    return {
        kind: {
            "n": len(ms),
            "p50_ms": statistics.median(ms),
            "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": statistics.fmean(ms),
        }
        for kind, ms in times.items()
    }


def ood_overhead(engine: InferenceEngine, files: list[Path], rounds: int = 30) -> dict[str, float]:
    """In-process cost of the OOD block: ``engine.predict`` on batches of 8, with and without the guard.

    Interleaved rounds (with, without, with, ...) so that load from other processes hits both
    alike; the median per-batch time of each.
    """
    pixels = np.stack([engine.decode(p.read_bytes()) for p in files[:8]])
    guard = engine.ood
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name in ("with", "without"):
            engine.ood = guard if name == "with" else None
            start = time.perf_counter()
            engine.predict(pixels)
            times[name].append((time.perf_counter() - start) * 1000)
    engine.ood = guard
    result = {f"{k}_ms": statistics.median(v) for k, v in times.items()}
    result["overhead"] = result["with_ms"] / result["without_ms"] - 1
    return result


def format2_copy(model_dir: Path, data: Path, dest: Path) -> Path:
    """The same export as format 2 would lay it out: a ``logits``/``features`` int8 graph, one-part guard."""
    from lightning_app.data.pixels import split_pixels
    from lightning_app.export.gate import CALIBRATION_IMAGES
    from lightning_app.inference.artefacts import ONNX_INT8
    from lightning_app.inference.backends import export_onnx, quantize_int8
    from lightning_app.inference.eager import load_network
    from lightning_app.inference.ood import OODGuard

    shutil.copytree(model_dir, dest)
    engine = InferenceEngine(dest)
    size = engine.preprocessing.image_size
    train, labels = split_pixels(data, "train", image_size=size)
    val, _ = split_pixels(data, "val", image_size=size)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
    fp32 = export_onnx(load_network(dest, engine.meta), dest / "v2_fp32.onnx", in_channels=1, image_size=size)
    quantize_int8(fp32, dest / ONNX_INT8, engine.normalise(train[pick]))
    fp32.unlink()
    (dest / OOD_STATS).unlink()
    v2 = InferenceEngine(dest)

    def features(pixels: torch.Tensor) -> np.ndarray:
        return np.concatenate([v2.forward(pixels[i : i + 64]).features for i in range(0, len(pixels), 64)])

    OODGuard.fit(features(train), labels, len(v2.class_names)).calibrated(features(val)).save(
        dest / OOD_STATS
    )
    return dest


def prediction_cost(
    engines: dict[str, InferenceEngine], files: list[Path], rounds: int = 40
) -> dict[str, Any]:
    """Median ``engine.predict`` time per engine at batch 1 and 8, interleaved rounds."""
    pixels = np.stack([next(iter(engines.values())).decode(p.read_bytes()) for p in files[:8]])
    times: dict[str, list[float]] = {f"{name} b{b}": [] for name in engines for b in (1, 8)}
    for _ in range(rounds):
        for name, engine in engines.items():
            for b in (1, 8):
                start = time.perf_counter()
                engine.predict(pixels[:b])
                times[f"{name} b{b}"].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(ms) for key, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, help="default: the newest best-*.ckpt under runs/")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the held-out scans (latency)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--no-throughput", action="store_true", help="skip part 3 (locust)")
    parser.add_argument(
        "--heatmap", choices=HEATMAP_METHODS, help="the server's SERVE_HEATMAP (default: auto)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    args.ckpt = args.ckpt or newest_best_checkpoint(REPO / "runs")
    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    exported = export(args.ckpt, work / "model", data_dir=args.data)
    engine = InferenceEngine(work / "model")
    spots = hot_spots(engine, held_out(args.data, "yes"), args.heatmap)
    print(f"hot spot inside the head: {spots}", flush=True)
    overhead = ood_overhead(engine, held_out(args.data))
    print(f"OOD block in-process: {overhead}", flush=True)
    cost = prediction_cost(
        {
            "format 3": engine,
            "format 2": InferenceEngine(format2_copy(work / "model", args.data, work / "v2")),
        },
        held_out(args.data),
    )
    print(f"/predictions in-process, format 3 vs 2: {cost}", flush=True)
    mar = archive(exported, work / "store")
    files = held_out(args.data)
    with start_torchserve(
        mar, work / "ts", inference_port=free_port(), management_port=free_port(), metrics_port=free_port(),
        timeout=300, env={"SERVE_HEATMAP": args.heatmap} if args.heatmap else None,
    ) as server:  # fmt: skip
        lat = latencies(server.inference_url, files, args.repeats)
    print(f"latency: {lat}", flush=True)
    throughput: dict[str, Any] = {}
    if not args.no_throughput:
        # the same export (same backend) without the OOD statistics: answers carry no OOD block
        bare = archive(
            dataclasses.replace(exported, extra=tuple(p for p in exported.extra if p.name != OOD_STATS)),
            work / "store-bare",
        )
        for name, archive_path in (("without OOD", bare), ("with OOD", mar)):
            throughput[name] = run_torchserve(
                archive_path, work / name.replace(" ", "-"), args.users, args.duration, {}
            )
            print(f"{name}: {throughput[name]}", flush=True)
    meta = exported.metadata
    ratio = lat["explanations"]["p95_ms"] / lat["predictions"]["p95_ms"]
    explainer = Explainer(engine, method=args.heatmap)
    model = f"model {meta['backbone']} at {meta['preprocessing']['image_size']} px"
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}"
    pred, expl = lat["predictions"], lat["explanations"]
    chosen = f" HEATMAP={args.heatmap}" if args.heatmap else ""
    lines = [
        f"`make bench-explain CKPT={args.ckpt}{chosen}` — {when}; "
        f"{model}, checkpoint `{meta['checkpoint']}` (version {meta['version']}); heatmap method "
        f"{explainer.method} on `{explainer.layer}`, computed from "
        + (
            f"the served {explainer.backend_name} forward pass (its `cam` output)."
            if explainer.served
            else f"the served {explainer.backend_name} forward pass on occluded copies."
            if explainer.method == "occlusion"
            else "a second, fp32 pass."
        ),
        "",
        "- Hottest heatmap pixel inside the head (not background, not the 3-px rim or the image border), "
        f"held-out tumour scans: **{spots['inside']}/{spots['n']} = {spots['rate']:.1%}** "
        f"(95 % CI {spots['ci95'][0]:.1%}-{spots['ci95'][1]:.1%}).",
        f"- Latency at 1 user, {pred['n']} requests each on the held-out scans: /predictions p50 "
        f"{pred['p50_ms']:.1f} ms, p95 {pred['p95_ms']:.1f} ms; /explanations p50 {expl['p50_ms']:.1f} ms, "
        f"p95 {expl['p95_ms']:.1f} ms (**p95 ratio {ratio:.2f}x**, goal <= 2x).",
    ]
    lines.append(
        f"- OOD block in-process (`engine.predict`, batch 8, {engine.backend.name} backend, median of 30 "
        f"interleaved rounds): {overhead['without_ms']:.1f} ms without, {overhead['with_ms']:.1f} ms with: "
        f"**{overhead['overhead']:+.1%}**."
    )
    c3, c2 = (f"{cost[f'format {v} b1']:.2f}/{cost[f'format {v} b8']:.2f} ms" for v in (3, 2))
    changes = ", ".join(f"{cost[f'format 3 b{b}'] / cost[f'format 2 b{b}'] - 1:+.1%}" for b in (1, 8))
    lines.append(
        f"- /predictions in-process (`engine.predict`, {engine.backend.name}, batch 1/8, median of 40 "
        f"interleaved rounds): format 3 (graph with `cam` + stage outputs, ensemble guard) {c3} vs "
        f"format 2 (logits + features, penultimate guard), same weights, {c2}: **{changes}** (goal <= +5 %)."
    )
    if throughput:
        a, b = throughput["without OOD"], throughput["with OOD"]
        change = b["rps"] / a["rps"] - 1
        lines.append(
            f"- /predictions throughput, locust {args.users} users x {args.duration} s, one after the other: "
            f"without the OOD block {a['rps']:.1f} RPS (p95 {a['p95_ms']:.0f} ms), with it {b['rps']:.1f} "
            f"RPS (p95 {b['p95_ms']:.0f} ms): **{change:+.1%}**; failures {a['failures']:.0f} / "
            f"{b['failures']:.0f}."
        )
    table = "\n".join(lines)
    print(table)
    report = {
        "checkpoint": str(args.ckpt),
        "hot_spots": spots,
        "latency": lat,
        "ood_overhead": overhead,
        "format_cost": cost,
        "throughput": throughput,
    }
    save_report("bench_explain", report)
    if not args.no_doc:
        write_section("bench-explain", table, DOC)


if __name__ == "__main__":
    main()
