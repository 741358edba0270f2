"""Sweep training recipes for accuracy (not speed): each recipe trains from scratch,
the best-by-val checkpoint is tested on the held-out split.

Accuracy does not depend on the hardware, so this can run on a GPU machine to choose
the recipe, whose *wall time* is then measured on the 2-core CPU by bench_train.py.

    python benchmarks/recipe_sweep.py --recipes benchmarks/recipes.json --accelerator gpu --parallel 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.models.classifier import Classifier


def run(recipe: dict[str, Any], accelerator: str, workers: int, root: str) -> dict[str, Any]:
    L.seed_everything(recipe.get("seed", 42), verbose=False)
    dm = ImageFolderDataModule(
        root,
        image_size=recipe["image_size"],
        batch_size=recipe.get("batch_size", 64),
        num_workers=workers,
        degrees=recipe.get("degrees", 10.0),
    )
    model = Classifier(
        backbone=recipe["backbone"],
        num_classes=dm.num_classes,
        class_names=dm.class_names,
        preprocessing=dm.preprocessing_config,
        lr=recipe.get("lr", 3e-3),
        weight_decay=recipe.get("weight_decay", 0.05),
        label_smoothing=recipe.get("label_smoothing", 0.0),
        scheduler=recipe.get("scheduler", "onecycle"),
        warmup_fraction=recipe.get("warmup", 0.2),
    )
    ckpt = ModelCheckpoint(monitor="val/acc", mode="max", dirpath=f"/tmp/sweep/{recipe['name']}")
    history: list[float] = []

    class Track(L.Callback):
        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                history.append(round(float(trainer.callback_metrics["val/acc"]), 4))

    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_epochs=recipe["epochs"], logger=False,
        callbacks=[ckpt, Track()], enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    start = time.time()
    trainer.fit(model, datamodule=dm)
    (test,) = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)
    (last,) = trainer.test(model, datamodule=dm, ckpt_path=None, verbose=False)
    return {
        **recipe,
        "test_acc": round(test["test/acc"], 4),
        "test_auroc": round(test["test/auroc"], 4),
        "last_test_acc": round(last["test/acc"], 4),
        "val_acc": history,
        "seconds": round(time.time() - start, 1),
    }


def _worker(args: tuple[dict[str, Any], str, int, str]) -> dict[str, Any]:
    try:
        return run(*args)
    except Exception as exc:  # report and go on with the other recipes
        return {**args[0], "error": repr(exc)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", type=Path, required=True)
    parser.add_argument("--root", default="data/br35h")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 with --parallel > 1)")
    parser.add_argument("--out", type=Path, default=Path("sweep.json"))
    args = parser.parse_args()
    recipes = json.loads(args.recipes.read_text())
    workers = args.workers if args.parallel == 1 else 0  # pool processes are daemonic: no children
    jobs = [(r, args.accelerator, workers, args.root) for r in recipes]
    results = []
    with mp.get_context("spawn").Pool(args.parallel) as pool:
        for result in pool.imap_unordered(_worker, jobs):
            print(json.dumps(result), flush=True)
            results.append(result)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
