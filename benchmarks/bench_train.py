"""``make bench-train``: the default recipe on the leak-free split -- accuracy, AUROC, tumour
sensitivity and ECE with group-bootstrap CIs, wall time, peak RSS, the spread over seeds --
and Lightning's training throughput against a plain PyTorch loop on the same model, data,
batch size and transforms (plus Lightning at 32-true vs bf16-mixed). Results are written
into docs/benchmarks.md.

    uv run python -m benchmarks.bench_train --config configs/default.yaml --data data/br35h [--seeds 42 43 44]
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

from benchmarks.docsection import write_section

REPO = Path(__file__).resolve().parents[1]

DOC = REPO / "docs" / "benchmarks.md"


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def resolved(configs: list[Path]) -> dict[str, Any]:
    """The config the CLI would run (base + every file), via ``--print_config``."""
    cmd = [sys.executable, "-m", "lightning_app", "fit", *(a for c in configs for a in ("--config", str(c)))]
    out = subprocess.run([*cmd, "--print_config"], cwd=REPO, capture_output=True, text=True, check=True)
    return cast(dict[str, Any], yaml.safe_load(out.stdout))


def run_fit(configs: list[Path], data: str, root: Path, seed: int) -> dict[str, Any]:
    """Run the real CLI (fit + calibrate + test) and watch its wall time and peak tree RSS."""
    cmd = [sys.executable, "-m", "lightning_app", "fit", *(a for c in configs for a in ("--config", str(c))),
           "--data.data_dir", data, "--seed_everything", str(seed),
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
    from lightning_app.training.runs import run_dirs

    (run_dir,) = run_dirs(root)[-1:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_s": wall, "peak_rss_gib": peak / 2**30, "run_dir": str(run_dir), **metrics}


def throughput(cfg: dict[str, Any], data: str, steps: int, warmup: int, rounds: int) -> dict[str, float]:
    """Images/s of Lightning's fit loop and of a plain loop, interleaved, same everything."""
    import lightning as L
    import torch
    from torchmetrics import MetricCollection

    from lightning_app.data.datamodule import ImageFolderDataModule
    from lightning_app.models.classifier import Classifier

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

    configured = cfg["trainer"].get("precision") or "32-true"

    def lightning_run(precision: str = configured) -> float:
        L.seed_everything(0, verbose=False)
        timer = Timer()
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_steps=warmup + steps, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[timer], precision=cast(Any, precision),
        )  # fmt: skip
        trainer.fit(Classifier(**model_args), train_dataloaders=dm.train_dataloader())
        return steps * batch / timer.seconds

    def plain_run() -> float:
        """The same steps in a hand-written loop, at the config's precision."""
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
                # the config's precision, as Lightning's bf16-mixed plugin runs training_step
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=configured == "bf16-mixed"):
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

    results: dict[str, list[float]] = {"lightning": [], "plain": [], "fp32": [], "bf16": []}
    for _ in range(rounds):
        results["lightning"].append(lightning_run())
        results["plain"].append(plain_run())
        results["fp32"].append(lightning_run("32-true"))
        results["bf16"].append(lightning_run("bf16-mixed"))
    best = {k: max(v) for k, v in results.items()}
    return {
        "lightning_img_s": best["lightning"],
        "plain_img_s": best["plain"],
        "ratio": best["lightning"] / best["plain"],
        "fp32_img_s": best["fp32"],
        "bf16_img_s": best["bf16"],
    }


def _v(block: dict[str, Any], pct: bool = True) -> str:
    scale, digits = (100, 1) if pct else (1, 3)
    return (
        f"{block['value'] * scale:.{digits}f} ({block['low'] * scale:.{digits}f} to "
        f"{block['high'] * scale:.{digits}f})"
    )


def fit_lines(fits: list[dict[str, Any]], seeds: list[int]) -> list[str]:
    """The goals table of the first seed's run, then the spread over seeds."""
    first = fits[0]
    ci, per = first["confidence_intervals"], first["per_class"]
    tumour = next(c for c in per if "tumor" in c and not c.startswith("no"))
    sens = per[tumour]["sensitivity"]
    ece = first["calibration"]["test_ece_after"]

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    acc = ci["accuracy"]["value"]
    lines = [
        f"One real run (seed {seeds[0]}); 95 % CIs resample near-duplicate groups "
        f"({ci['n_images']} test images in {ci['n_groups']} groups):",
        "",
        "| metric | value (95 % CI) | goal | |",
        "|---|---|---|---|",
        f"| test accuracy, % | {_v(ci['accuracy'])} | >= 96.5 (stretch 97.5) | {met(acc >= 0.965)} |",
        f"| test AUROC | {_v(ci['auroc'], pct=False)} | >= 0.99 | {met(ci['auroc']['value'] >= 0.99)} |",
        f"| tumour sensitivity, % | {_v(sens)} | >= 96 | {met(sens['value'] >= 0.96)} |",
        f"| tumour specificity, % | {_v(per[tumour]['specificity'])} | reported | |",
        f"| test ECE after temperature scaling | {ece:.4f} "
        f"(before {first['calibration']['test_ece_before']:.4f}) | <= 0.03 | {met(ece <= 0.03)} |",
        f"| wall time of fit + calibrate + test | {first['wall_s'] / 60:.1f} min | <= 15 min | "
        f"{met(first['wall_s'] <= 900)} |",
        f"| peak RSS of the run (process tree) | {first['peak_rss_gib']:.2f} GiB | <= 4 GiB | "
        f"{met(first['peak_rss_gib'] <= 4)} |",
        "",
        f"Run dir: `{Path(first['run_dir']).relative_to(REPO)}`, data `{first['data_version'][:24]}...`, "
        f"commit `{first['git_commit'][:12]}`.",
        "",
    ]
    if len(fits) > 1:
        lines += [
            "| seed | test acc | AUROC | tumour sensitivity | ECE after | wall |",
            "|---|---|---|---|---|---|",
        ]
        for seed, fit in zip(seeds, fits, strict=True):
            c, p = fit["confidence_intervals"], fit["per_class"][tumour]
            lines.append(
                f"| {seed} | {c['accuracy']['value']:.4f} | {c['auroc']['value']:.4f} | "
                f"{p['sensitivity']['value']:.4f} | {fit['calibration']['test_ece_after']:.4f} | "
                f"{fit['wall_s'] / 60:.1f} min |"
            )
        accs = [f["confidence_intervals"]["accuracy"]["value"] for f in fits]
        mean = sum(accs) / len(accs)
        sd = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5
        lines += ["", f"Test accuracy over {len(fits)} seeds: mean {mean:.4f}, sd {sd:.4f}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, nargs="+", default=[REPO / "configs/default.yaml"])
    parser.add_argument("--data", default="data/br35h")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-fit", action="store_true", help="only the throughput comparison")
    args = parser.parse_args()
    configs = [c.resolve() for c in args.config]
    machine = (
        f"{platform.machine()}, {psutil.cpu_count()} vCPU, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    )
    names = " ".join(str(c.relative_to(REPO)) for c in configs)
    lines = [
        "## Training (`make bench-train`)",
        "",
        f"Command: `uv run python -m benchmarks.bench_train --config {names} --seeds "
        f"{' '.join(map(str, args.seeds))}` on {machine} ({platform.processor() or 'cpu'}), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    if not args.skip_fit:
        fits = [run_fit(configs, args.data, REPO / "runs" / "bench-train", seed) for seed in args.seeds]
        lines += fit_lines(fits, args.seeds)
        for fit in fits:
            print(
                json.dumps({k: v for k, v in fit.items() if k not in ("confusion_matrix", "misclassified")})
            )
    tp = throughput(resolved(configs), args.data, args.steps, args.warmup, args.rounds)
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
        f"| Lightning, `precision: 32-true` | {tp['fp32_img_s']:.1f} |",
        f"| Lightning, `precision: bf16-mixed` | {tp['bf16_img_s']:.1f} "
        f"({tp['bf16_img_s'] / tp['fp32_img_s']:.2f}x) |",
    ]
    print(json.dumps(tp))
    write_section("bench-train", "\n".join(lines), DOC)


if __name__ == "__main__":
    main()
