"""``make bench-train``: the default recipe's accuracy, wall time and peak RSS, and
Lightning's training throughput against a plain PyTorch loop on the same model, data,
batch size and transforms. Results are written into docs/benchmarks.md.

    uv run python benchmarks/bench_train.py --config configs/default.yaml --data data/br35h
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_fit(config: Path, data: str, root: Path) -> dict[str, Any]:
    """Run the real CLI (fit + test) and watch its wall time and peak tree RSS."""
    cmd = [sys.executable, "-m", "lightning_app", "fit", "--config", str(config), "--data.data_dir", data,
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"})
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.5)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"fit failed with exit code {proc.returncode}")
    from lightning_app.runs import run_dirs

    (run_dir,) = run_dirs(root)[-1:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_s": wall, "peak_rss_gib": peak / 2**30, "run_dir": str(run_dir), **metrics}


def throughput(config: Path, data: str, steps: int, warmup: int, rounds: int) -> dict[str, float]:
    """Images/s of Lightning's fit loop and of a plain loop, interleaved, same everything."""
    import lightning as L
    import torch
    from torchmetrics import MetricCollection

    from lightning_app.data.datamodule import ImageFolderDataModule
    from lightning_app.models.classifier import Classifier

    cfg = yaml.safe_load(config.read_text())
    data_args = {k: v for k, v in cfg["data"].items() if k != "class_map"} | {"data_dir": data}
    dm = ImageFolderDataModule(**data_args)
    dm.setup("fit")
    batch = dm.hparams["batch_size"]
    model_args = dict(cfg["model"], num_classes=dm.num_classes)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    def lightning_run() -> float:
        L.seed_everything(0, verbose=False)
        timer = Timer()
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=warmup + steps, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[timer], precision=cfg["trainer"].get("precision", "32-true"),
        )  # fmt: skip
        trainer.fit(Classifier(**model_args), train_dataloaders=dm.train_dataloader())
        return steps * batch / timer.seconds

    def plain_run() -> float:
        L.seed_everything(0, verbose=False)
        model = Classifier(**model_args)  # same net, loss, optimiser and schedule
        model.train()
        net, loss_fn = model.net, model.loss
        metrics = cast(MetricCollection, model.metrics["train_metrics"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=model_args.get("lr", 1e-3))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=model_args.get("lr", 1e-3), total_steps=warmup + steps
        )
        done, start = 0, 0.0
        while done < warmup + steps:
            for images, targets in dm.train_dataloader():
                if done == warmup:
                    start = time.perf_counter()
                if model_args.get("channels_last", True):
                    images = images.contiguous(memory_format=torch.channels_last)
                logits = net(images)
                loss = loss_fn(logits, targets)
                metrics.update(logits.detach().softmax(1), targets)  # what training_step also does
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                done += 1
                if done == warmup + steps:
                    break
        return steps * batch / (time.perf_counter() - start)

    results: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(rounds):
        results["lightning"].append(lightning_run())
        results["plain"].append(plain_run())
    best = {k: max(v) for k, v in results.items()}
    return {
        "lightning_img_s": best["lightning"],
        "plain_img_s": best["plain"],
        "ratio": best["lightning"] / best["plain"],
    }


def write_section(text: str) -> None:
    """Replace the bench-train section of docs/benchmarks.md (or append it)."""
    DOC.parent.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=REPO / "configs/default.yaml")
    parser.add_argument("--data", default="data/br35h")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-fit", action="store_true", help="only the throughput comparison")
    args = parser.parse_args()
    args.config = args.config.resolve()
    machine = (
        f"{platform.machine()}, {psutil.cpu_count()} vCPU, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    )
    lines = [
        "## Training (`make bench-train`)",
        "",
        f"Command: `uv run python benchmarks/bench_train.py --config {args.config.relative_to(REPO)}` "
        f"on {machine} ({platform.processor() or 'cpu'}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    if not args.skip_fit:
        fit = run_fit(args.config, args.data, REPO / "runs" / "bench-train")
        m = fit["metrics"]
        lines += [
            "| metric | value | goal |",
            "|---|---|---|",
            f"| test accuracy | {m['test/acc']:.4f} | >= 0.97 (goal 0.985) |",
            f"| test AUROC | {m['test/auroc']:.4f} | reported |",
            f"| test macro F1 | {m['test/f1']:.4f} | reported |",
            f"| wall time of fit + test (incl. start-up) | {fit['wall_s'] / 60:.1f} min | <= 15 min |",
            f"| peak RSS of the run (process tree) | {fit['peak_rss_gib']:.2f} GiB | <= 4 GiB |",
            "",
            f"Run dir: `{Path(fit['run_dir']).relative_to(REPO)}`, data `{fit['data_version'][:24]}...`, "
            f"commit `{fit['git_commit'][:12]}`.",
            "",
        ]
        print(json.dumps({k: v for k, v in fit.items() if k != "confusion_matrix"}, indent=1))
    tp = throughput(args.config, args.data, args.steps, args.warmup, args.rounds)
    lines += [
        f"Throughput, same model/data/batch/transforms, {args.steps} timed steps "
        f"after {args.warmup} warm-up, "
        f"best of {args.rounds} interleaved rounds:",
        "",
        "| loop | train images/s |",
        "|---|---|",
        f"| Lightning `Trainer.fit` | {tp['lightning_img_s']:.1f} |",
        f"| plain PyTorch loop | {tp['plain_img_s']:.1f} |",
        f"| ratio (goal >= 0.95) | {tp['ratio']:.3f} |",
    ]
    print(json.dumps(tp))
    write_section("\n".join(lines))
    print(f"written to {DOC}")


if __name__ == "__main__":
    main()
