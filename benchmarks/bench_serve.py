"""``make bench-serve``: our ``.mar`` on TorchServe and on LitServe against the seed's FastAPI design.

Same machine, same weights (the default model, ResNet-18 at the training resolution),
locust headless on loopback, one server at a time, each request the next of the real
Br35H TEST images (their true size mix; ``--data``'s split, shuffled, rotating). The
``.mar`` is exported at the served precision (``--precision``, default the measured
winner, through its parity gate); the baseline runs the same weights in fp32 as the seed
did. Reports RPS, p50/p95/p99, failures and peak RSS of each server (process tree), the
raw backend's images/s at batch 1 and at the served batch size measured in the same run
(so served/raw is visible), the handler's CPU per request in-process
(:func:`benchmarks.bench_predlog.cpu_per_request`: CPU time, less moved by the machine's load
than wall-clock figures), start-to-ready times, the largest inference worker's RSS after the run (TorchServe
and LitServe) and the .mar size. ``--sweep`` first compares worker/batching settings
(shorter runs). The result table goes between the
``bench-serve`` markers of docs/benchmarks.md and into reports/bench_serve.json.

    uv run python -m benchmarks.bench_serve [--ckpt runs/.../best-*.ckpt] [--precision int8] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import torch
import yaml

from benchmarks.bench_predlog import cpu_line, cpu_per_request, images
from benchmarks.docsection import save_report, write_section
from benchmarks.loadtest import PeakRSS, cpu_split, image_folder, locust, pairs_line, row, run_fastapi
from benchmarks.reliability import cpu_seconds, worker_rss_mib
from lightning_app.data.pixels import split_pixels
from lightning_app.export.build import archive, export, newest_best_checkpoint
from lightning_app.export.context import Exported, ExportError
from lightning_app.inference.cascade import CascadeRule
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.parity import ParityBounds
from lightning_app.inference.settings import ServeSettings
from serve.ports import free_port
from serve.runtimes import start

REPO = Path(__file__).resolve().parents[1]

DOC = REPO / "docs" / "benchmarks.md"
MODEL_CONFIG = REPO / "serve" / "model-config.yaml"


def checkpoint(arg: Path | None, work: Path) -> tuple[Path, str]:
    """The given checkpoint, else the newest best one if it is the default model, else fresh weights.

    The default model is ``configs/default.yaml``'s backbone at its training resolution;
    fresh (untrained) weights serve at exactly the same speed.
    """
    default: dict[str, Any] = {}  # configs/default.yaml is an override of configs/base.yaml: merge them
    for name in ("base.yaml", "default.yaml"):
        for section, values in (yaml.safe_load((REPO / "configs" / name).read_text()) or {}).items():
            default[section] = {**default.get(section, {}), **values} if isinstance(values, dict) else values
    backbone, size = default["model"]["backbone"], int(default["data"]["image_size"])
    if arg:
        return arg, "given checkpoint"
    try:
        newest = newest_best_checkpoint(REPO / "runs")
        hp = torch.load(newest, map_location="cpu", weights_only=False)["hyper_parameters"]
        if hp.get("backbone") == backbone and int(hp["preprocessing"]["image_size"]) == size:
            return newest, f"trained: {newest.relative_to(REPO)}"
    except Exception:  # no runs yet, or an unreadable one: fall back to fresh weights
        pass
    import lightning as L

    from lightning_app.models.classifier import Classifier

    torch.manual_seed(0)  # the same fresh weights in every run
    model = Classifier(backbone=backbone, num_classes=2, class_names=["no_tumor", "tumor"],
                       preprocessing={"image_size": size, "mean": 0.5, "std": 0.25})  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.strategy.connect(model)
    path = work / f"{backbone}-untrained.ckpt"
    trainer.save_checkpoint(path)
    return path, "untrained weights, seed 0: speed does not depend on their values; no int8 parity gate"


def raw_throughput(export_dir: Path, pixels: torch.Tensor, batch: int, seconds: float = 5.0) -> float:
    """Images/s of the served backend alone (what the handler's engine runs), on real images."""
    engine = InferenceEngine(export_dir)
    x = engine.normalise(pixels[:batch])
    for _ in range(3):
        engine.backend(x)
    best = 0.0
    for _ in range(2):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            engine.backend(x)
            n += batch
        best = max(best, n / (time.perf_counter() - start))
    return best


def run_server(
    runtime: str, mar: Path, work: Path, users: int, duration: int, env: dict[str, str]
) -> dict[str, Any]:
    """Start ``runtime`` on ``mar``, load it, stop it; results plus start-to-ready and worker RSS."""
    with start(
        runtime, mar, work, inference_port=free_port(), management_port=free_port(),
        metrics_port=free_port(), timeout=300, env=env,
    ) as server:  # fmt: skip
        rss, before = PeakRSS(server.process.pid), cpu_seconds(server)
        result = locust(server.inference_url, runtime, users, duration, work)
        after = cpu_seconds(server)
        for part in ("workers", "other"):  # server CPU ms per request: the model workers, the rest
            result[f"cpu_{part}_ms"] = (after[part] - before[part]) / max(result["requests"], 1) * 1e3
        result["peak_rss_mib"] = rss.stop() / 2**20
        result["ready_s"] = server.started_in
        result["worker_rss_mib"] = worker_rss_mib(server.process.pid)
    return result


def run_torchserve(mar: Path, work: Path, users: int, duration: int, env: dict[str, str]) -> dict[str, Any]:
    """TorchServe on ``mar`` (:func:`run_server`)."""
    return run_server("torchserve", mar, work, users, duration, env)


def variant_mar(exported: Exported, work: Path, overrides: dict[str, int]) -> Path:
    """A .mar with ``model-config.yaml`` overridden (for the sweep)."""
    config = {**yaml.safe_load(MODEL_CONFIG.read_text()), **overrides}
    path = work / "model-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return archive(exported, work / "store", model_config=path)


SWEEP = [
    ("2 workers x 1 thread, batch 8 / 10 ms (as served, 30 s)", {}, "1"),
    ("2 workers x 1 thread, batch 4 / 10 ms", {"batchSize": 4}, "1"),
    ("2 workers x 1 thread, batch 16 / 10 ms", {"batchSize": 16}, "1"),
    ("2 workers x 1 thread, batch 8 / 5 ms", {"maxBatchDelay": 5}, "1"),
    ("2 workers x 1 thread, batch 8 / 20 ms", {"maxBatchDelay": 20}, "1"),
    ("1 worker x 2 threads, batch 8 / 10 ms", {"minWorkers": 1, "maxWorkers": 1}, "2"),
    ("2 workers x 1 thread, batch 1", {"batchSize": 1, "maxBatchDelay": 0}, "1"),
]
#: ``--sweep`` runs the first ``--sweep-size`` settings (the served one is the main run).


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h", help="prepared data root")
    parser.add_argument("--precision", help="served precision (default: the export's default, the winner)")
    parser.add_argument("--cascade", type=float, metavar="C", help="an ensemble as a cascade (as make mar)")
    parser.add_argument("--cascade-margin", type=float, default=0.0, metavar="M", help="and its margin")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--sweep", action="store_true", help="also compare batching/worker settings (30 s)")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep; no table is written")
    parser.add_argument("--sweep-size", type=int, default=len(SWEEP), help="how many sweep settings to run")
    parser.add_argument(
        "--pairs", type=int, default=1, help="TorchServe-then-LitServe runs (table: the first)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ckpt, origin = checkpoint(args.ckpt, work)
    options: dict[str, Any] = {"precision": args.precision} if args.precision else {}
    if args.cascade is not None:
        options["cascade"] = CascadeRule(args.cascade, args.cascade_margin)
    if origin.startswith("untrained"):  # nothing to keep: the int8 gate would judge noise
        options["parity_bounds"] = ParityBounds(min_agreement=0.0, max_accuracy_drop=1.0)
    try:
        exported = export(ckpt, work / "export", data_dir=args.data, options=options)
    except ExportError as exc:
        raise SystemExit(f"error: {exc}") from None
    precision = str(exported.metadata["backend"]["precision"])
    if rule := exported.metadata["backend"].get("cascade", {}).get("rule"):
        precision += f" cascade (C {rule['confidence']}, margin {rule['margin']})"
    mar = archive(exported, work / "store")
    os.environ["LOADTEST_IMAGES"] = str(image_folder(args.data, work))
    served = yaml.safe_load(MODEL_CONFIG.read_text())
    batch, workers = int(served["batchSize"]), int(served["minWorkers"])
    setting = f"batch {batch}, {workers} worker(s) x {ServeSettings.from_env().threads(workers)} thread(s)"
    size = int(exported.metadata["preprocessing"]["image_size"])
    pixels = split_pixels(args.data, "test", image_size=size)[0]
    raw = {b: raw_throughput(work / "export", pixels, b) for b in (1, batch)}
    print(f"raw {precision} backend img/s: {raw}", flush=True)
    cpu = cpu_per_request(str(work / "export"), images(args.data, 200), 5, batch)
    print(f"handler CPU per request: {cpu}", flush=True)
    sweep: list[tuple[str, dict[str, Any]]] = []
    if args.sweep or args.sweep_only:
        for i, (label, overrides, threads) in enumerate(SWEEP[: args.sweep_size]):
            sub = work / f"sweep{i}"
            sub.mkdir()
            result = run_torchserve(
                variant_mar(exported, sub, overrides), sub, args.users, 30, {"SERVE_TORCH_THREADS": threads}
            )
            sweep.append((label, result))
            print(row(label, result), flush=True)
    if args.sweep_only:
        return
    ts = run_torchserve(mar, work / "ts", args.users, args.duration, {})
    print(row("torchserve", ts), flush=True)
    lit = run_server("litserve", mar, work / "ls", args.users, args.duration, {})
    print(row("litserve", lit), flush=True)
    pairs = [(ts, lit)]
    for i in range(1, args.pairs):  # alternate, so a drift of the machine's speed hits both
        pair = (run_torchserve(mar, work / f"ts{i}", args.users, args.duration, {}),
                run_server("litserve", mar, work / f"ls{i}", args.users, args.duration, {}))  # fmt: skip
        pairs.append(pair)
        print(
            row(f"pair {i}: torchserve", pair[0]), row(f"pair {i}: litserve", pair[1]), sep="\n", flush=True
        )
    base = run_fastapi(work / "export", work / "fastapi", args.users, args.duration)
    print(row("fastapi", base), flush=True)
    meta = exported.metadata
    header = (
        "| server | RPS | p50 ms | p95 ms | p99 ms | failures/requests | peak RSS MiB | start-to-ready s |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"`make bench-serve{f' PAIRS={args.pairs}' if args.pairs > 1 else ''}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{psutil.cpu_count()} vCPU, torch {torch.__version__}; model {meta['backbone']} at "
        f"{meta['preprocessing']['image_size']} px ({origin}); {args.users} users x {args.duration} s, "
        "locust on the same cores.",
        "",
        header,
        row(f"TorchServe .mar, {precision} ({setting})", ts),
        row(f"LitServe, the same .mar ({setting})", lit),
        row("FastAPI seed design (baseline)", base),
        "",
        f"Largest inference worker's RSS after the run: TorchServe {ts['worker_rss_mib']:.0f} MiB, "
        f"LitServe {lit['worker_rss_mib']:.0f} MiB (TorchServe's worker imports torch; LitServe's "
        "runs the torch-free core).",
        "",
        "Server CPU ms per request during the load (all its processes, from `/proc`): TorchServe "
        f"{cpu_split(ts)}; LitServe {cpu_split(lit)} (the rest: TorchServe's JVM; LitServe's API "
        "server, its `multiprocessing.Manager` and the server process).",
        "",
        f"RPS ratio {ts['rps'] / base['rps']:.2f}x; raw {precision} backend img/s (same run, real test "
        f"images): batch 1 {raw[1]:.1f}, batch {batch} {raw[batch]:.1f}; served/raw "
        f"{ts['rps'] / raw[batch]:.0%}; .mar size {mar.stat().st_size / 2**20:.1f} MiB; requests rotate "
        f"over the {len(pixels)} test images of `{args.data.name}`.",
        "",
        cpu_line(cpu),
    ]
    if len(pairs) > 1:
        lines += ["", pairs_line(pairs, args.duration)]
    if sweep:
        lines += ["", "Tuning sweep (TorchServe only, 30 s each):", "", header]
        lines += [row(label, r) for label, r in sweep]
    table = "\n".join(lines)
    print(table)
    report = {
        "torchserve": ts,
        "litserve": lit,
        "fastapi": base,
        "raw_img_s": raw,
        "handler_cpu": cpu,
        "precision": precision,
        "sweep": dict(sweep),
        "pairs": pairs,
        "checkpoint": str(ckpt),
    }
    save_report("bench_serve", report)
    if not args.no_doc:
        write_section("bench-serve", table, DOC)


if __name__ == "__main__":
    main()
