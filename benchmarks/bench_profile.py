"""PyTorch profiler over N training steps and over the serving handler's batch path.

``make profile`` runs, on the CPU and on real images of the prepared data set:

* **train**: ``--steps`` Lightning training steps (forward, loss, backward, optimiser) of the
  config's model on the training split, after ``--warmup`` unprofiled steps; the config's
  precision (``bf16-mixed`` for the default recipe);
* **serve**: ``--rounds`` batches of ``--batch`` test-split scans through
  :class:`serve.handler.BrainMRIHandler` (the TorchServe handler: decode, forward,
  calibrated answers, JSON), on ``--mar`` when given, else on the model just profiled,
  exported in fp32 (:func:`lightning_app.export.build.export` without extra steps).

Each part writes a chrome trace (``chrome://tracing`` or https://ui.perfetto.dev) to
``--out`` and a top-ops table (self CPU time) that replaces the ``profile`` section of
docs/benchmarks.md.

    uv run python -m benchmarks.bench_profile --data data/br35h [--steps 20] [--mar model_store/brain_mri.mar]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from benchmarks.bench_predlog import Context, images
from benchmarks.bench_train import REPO, resolved
from benchmarks.docsection import write_section
from serve.handler import BrainMRIHandler

ROWS = 12


def top_ops(prof: profile, rows: int = ROWS) -> list[dict[str, Any]]:
    """The ``rows`` ops with the most self CPU time: name, calls, self/total ms, share of self time."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [
        {
            "op": e.key,
            "calls": int(e.count),
            "self_ms": e.self_cpu_time_total / 1e3,
            "total_ms": e.cpu_time_total / 1e3,
            "self_pct": 100 * e.self_cpu_time_total / total,
        }
        for e in ranked
    ]


def table(ops: list[dict[str, Any]]) -> list[str]:
    """A markdown table of :func:`top_ops`."""
    lines = ["| op | calls | self CPU ms | total CPU ms | share of self time |", "|---|---:|---:|---:|---:|"]
    for op in ops:
        name = op["op"].replace("|", "/")
        times = f"{op['self_ms']:.1f} | {op['total_ms']:.1f} | {op['self_pct']:.1f} %"
        lines.append(f"| `{name}` | {op['calls']} | {times} |")
    return lines


def profile_training(
    cfg: dict[str, Any], data: Path, steps: int, warmup: int, work: Path
) -> tuple[profile, Path]:
    """Profile ``steps`` training steps after ``warmup``; return the profiler and a checkpoint."""
    import lightning as L

    from lightning_app.data.datamodule import ImageFolderDataModule
    from lightning_app.models.classifier import Classifier

    data_args = cfg["data"] | {"data_dir": str(data), "cache_dir": str(work / "cache")}
    dm = ImageFolderDataModule(**data_args)
    dm.setup("fit")
    linked = {"num_classes": dm.num_classes, "class_names": dm.class_names}
    model = Classifier(**(cfg["model"] | linked | {"preprocessing": dm.preprocessing_config}))
    prof = profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1),
        record_shapes=True,
    )

    class Step(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            prof.step()

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=warmup + steps, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Step()], precision=cast(Any, cfg["trainer"].get("precision") or "32-true"),
        default_root_dir=str(work),
    )  # fmt: skip
    with prof:
        trainer.fit(model, train_dataloaders=dm.train_dataloader())
    checkpoint = work / "profiled.ckpt"
    trainer.save_checkpoint(checkpoint)
    return prof, checkpoint


def model_dir_of(mar: Path | None, checkpoint: Path, work: Path) -> Path:
    """The directory TorchServe would unpack: ``mar``'s files, else ``checkpoint`` exported in fp32."""
    out = work / "model"
    if mar is not None:
        with zipfile.ZipFile(mar) as archive:
            archive.extractall(out)
        return out
    from lightning_app.export.build import export

    export(checkpoint, out, steps=[])
    return out


def profile_serving(model_dir: Path, scans: list[bytes], batch: int, rounds: int) -> profile:
    """Profile ``rounds`` handler batches of ``batch`` scans (after one unprofiled warm-up batch)."""
    context = Context(str(model_dir))
    service = BrainMRIHandler()
    service.initialize(context)
    if service.log is not None:
        service.log.stream = open(os.devnull, "w")  # noqa: SIM115
    batches = [
        [{"body": scans[(i * batch + j) % len(scans)]} for j in range(batch)] for i in range(rounds + 1)
    ]
    service.handle(batches[0], context)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for rows in batches[1:]:
            for body in service.handle(rows, context):
                if "prediction" not in json.loads(body):  # a refused scan would profile the error path
                    raise SystemExit(f"error: the handler did not classify a test scan: {body[:200]}")
    return prof


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Profile both parts; write the traces to ``args.out``; return the tables' rows."""
    torch.set_num_threads(args.threads)
    cfg = resolved(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prof, checkpoint = profile_training(cfg, args.data, args.steps, args.warmup, work)
        prof.export_chrome_trace(str(args.out / "train_trace.json"))
        report["train"] = top_ops(prof)
        model_dir = model_dir_of(args.mar, checkpoint, work)
        scans = images(args.data, args.batch * 4)
        prof = profile_serving(model_dir, scans, args.batch, args.rounds)
        prof.export_chrome_trace(str(args.out / "serve_trace.json"))
        report["serve"] = top_ops(prof)
    return report


def section(args: argparse.Namespace, report: dict[str, Any]) -> str:
    """The ``profile`` section of docs/benchmarks.md."""
    configs = " ".join(str(Path(c).resolve().relative_to(REPO)) for c in args.config)
    mar = f" --mar {args.mar}" if args.mar else ""
    command = (
        f"uv run python -m benchmarks.bench_profile --config {configs} --data {args.data} "
        f"--steps {args.steps} --warmup {args.warmup} --batch {args.batch} --rounds {args.rounds} "
        f"--threads {args.threads}{mar}"
    )
    served = f"`{args.mar}`" if args.mar else "the profiled model exported in fp32 (eager PyTorch)"
    lines = [
        "## Profile: training steps and the handler's batch path",
        "",
        f"Command (`make profile`): `{command}`",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; the machine was shared "
        "with other jobs (a training study), so absolute times are upper bounds: read the shares. "
        f"Chrome traces: `{args.out}/train_trace.json`, `{args.out}/serve_trace.json` (not committed; "
        "open them in https://ui.perfetto.dev). The profiler (shapes recorded) slows every op down: "
        "speeds are `make bench-train`'s and `make bench-serve`'s; this section says where the time goes.",
        "",
        f"**Training**: {args.steps} steps of `{configs}` after {args.warmup} warm-up steps, "
        f"on the training split. Top {ROWS} ops by self CPU time:",
        "",
        *table(report["train"]),
        "",
        f"**Serving**: {args.rounds} batches of {args.batch} test-split scans through "
        f"`BrainMRIHandler.handle` on {served}. Top {ROWS} ops by self CPU time:",
        "",
        *table(report["serve"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, nargs="+", default=[REPO / "configs/default.yaml"])
    parser.add_argument("--data", type=Path, default=Path("data/br35h"))
    parser.add_argument("--steps", type=int, default=20, help="profiled training steps")
    parser.add_argument("--warmup", type=int, default=2, help="training steps before the profiled ones")
    parser.add_argument("--batch", type=int, default=8, help="scans per handler batch")
    parser.add_argument("--rounds", type=int, default=10, help="profiled handler batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--mar", type=Path, help="profile this .mar's model (default: the profiled one, fp32)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/profile"), help="chrome traces go here")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.mar is not None and not args.mar.is_file():
        raise SystemExit(f"error: .mar not found: {args.mar}")
    report = run(args)
    (args.out / "top_ops.json").write_text(json.dumps(report, indent=2))
    text = section(args, report)
    print(text)
    if not args.no_doc:
        write_section("profile", text)


if __name__ == "__main__":
    main()
