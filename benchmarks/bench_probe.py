"""``make bench-probe``: what a backbone's features know, read by a linear probe on one CV fold.

A logistic regression (L-BFGS, L2 ``1e-3``, standardised features) is fitted on the frozen
backbone's pooled features of CV fold K's inner training scans and scored on the fold's
held-out scans: accuracy and AUROC. It measures a representation without fine-tuning it:
what self-supervised pretraining (:mod:`lightning_app.training.selfsup`) learnt without a
label, against the untrained network (the floor) and a supervised run of the same fold.

Rows: the untrained network (initialised from seed 0), each ``--pretrained`` backbone (a
``runs/selfsup/*.pt`` made on fold K's split, checked) and each ``--ckpt`` (a run of fold K,
checked), each fed every ``--size`` (the scans resized from the recipe's size).

    uv run python -m benchmarks.bench_probe --cv-fold 0 --pretrained runs/selfsup/resnet18-<key>.pt \
        --ckpt runs/cv/default/fold_0/version_0/checkpoints/best-*.ckpt --size 64 --size 128

Results: stdout only (docs/benchmarks.md quotes them beside this command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.inference.eager import TorchBackend
from lightning_app.models.backbones import build_backbone
from lightning_app.models.classifier import Classifier
from lightning_app.training import evaluation as ev
from lightning_app.training.recorded import trained_on

BATCH = 128


def features(net: nn.Module, pixels: torch.Tensor, *, mean: float, std: float, size: int) -> torch.Tensor:
    """Pooled features (the final linear layer's input) of ``uint8 [N, 1, S, S]`` scans fed at ``size``."""
    backend, taken = TorchBackend(net), []
    for start in range(0, len(pixels), BATCH):
        x = (pixels[start : start + BATCH].float() / 255 - mean) / std
        if size != x.shape[-1]:
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        taken.append(torch.from_numpy(backend(x).features))
    return torch.cat(taken)


def linear_probe(
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor
) -> tuple[float, float]:
    """Fit a multinomial logistic regression on ``train``; its ``(accuracy, AUROC)`` on ``test``."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mean) / std, (test - mean) / std
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(a @ weight + bias, train_labels) + 1e-3 * (weight**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        stats = ev.summary((b @ weight + bias).softmax(dim=1), test_labels)
    return stats["accuracy"], stats["auroc"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv-fold", type=int, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--data", default="data/br35h")
    parser.add_argument("--pretrained", action="append", default=[], type=Path)
    parser.add_argument("--ckpt", action="append", default=[], type=Path)
    parser.add_argument("--size", action="append", type=int)
    parser.add_argument("--backbone", default="resnet18", help="of the untrained and pretrained rows")
    args = parser.parse_args(argv)
    dm = ImageFolderDataModule(data_dir=args.data, cv_folds=args.folds, cv_fold=args.cv_fold)
    torch.manual_seed(0)  # the untrained row is the same network on every run
    untrained = build_backbone(args.backbone, num_classes=dm.num_classes)
    nets: list[tuple[str, nn.Module]] = [("untrained", untrained)]
    for path in args.pretrained:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["key"]["split"].get("cv_fold") != args.cv_fold:
            sys.exit(f"error: {path} was pretrained on another split than CV fold {args.cv_fold}")
        net = build_backbone(args.backbone, num_classes=dm.num_classes)
        net.load_state_dict(saved["state_dict"], strict=False)
        nets.append((f"self-supervised {path.name}", net))
    for path in args.ckpt:
        if trained_on(path).get("cv_fold") != args.cv_fold:
            sys.exit(f"error: {path} was not trained as CV fold {args.cv_fold}")
        nets.append((f"supervised {path}", Classifier.load_from_checkpoint(path, map_location="cpu").net))
    dm.setup("fit")
    train, test = dm.datasets["train"], dm.datasets["test"]
    mean, std = dm.hparams["mean"], dm.hparams["std"]
    print(f"linear probe, CV fold {args.cv_fold}: {len(train)} inner training -> {len(test)} held-out scans")
    print("| backbone | input px | accuracy % | AUROC |\n|---|---|---|---|")
    for name, net in nets:
        for size in args.size or [train.pixels.shape[-1]]:
            fit = features(net, train.pixels, mean=mean, std=std, size=size)
            scored = features(net, test.pixels, mean=mean, std=std, size=size)
            accuracy, auroc = linear_probe(fit, train.labels, scored, test.labels)
            print(f"| {name} | {size} | {100 * accuracy:.1f} | {auroc:.3f} |")


if __name__ == "__main__":
    main()
