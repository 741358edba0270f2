"""What the export's gates share: the held-out images, the fp32 reference, the comparison, int8.

The precision step (:mod:`~lightning_app.export.precision`) and the cascade step
(:mod:`~lightning_app.export.cascade`) judge a served artefact the same way: its served
probabilities against the fp32 network's (the Lightning model's own weights) on the held-out
images, validation and test together. The fp32 reference is computed once per export
(:func:`judge`) and int8 graphs are calibrated on the same training images (:func:`quantize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_app.export.context import ExportContext
from lightning_app.inference.backends import quantize_int8
from lightning_app.inference.forward import Backend
from lightning_app.inference.parity import ParityBounds
from lightning_app.inference.tapped import Tapped
from lightning_app.transforms import EvalPreset

#: Training images used to calibrate int8 activation ranges (a seeded random sample).
CALIBRATION_IMAGES = 100
HELD_OUT = ("val", "test")


@dataclass(frozen=True)
class Parity:
    """Artefact vs fp32 network on ``images`` held-out images."""

    images: int
    agreement: float
    fp32_accuracy: float
    accuracy: float
    accuracy_drop: float
    max_abs_prob_diff: float

    def violations(self, bounds: ParityBounds) -> list[str]:
        """What breaks ``bounds``, in words (empty: the artefact passes)."""
        return bounds.violations(asdict(self))


@torch.inference_mode()
def probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, temperature: float, batch: int = 64
) -> torch.Tensor:
    """Served probabilities ``softmax(logits / temperature)`` of normalised images ``x``, by batches."""
    return torch.cat([(logits_of(chunk).float() / temperature).softmax(1) for chunk in x.split(batch)])


def reference_probs(net: torch.nn.Module, x: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """The fp32 ``net``'s served probabilities."""
    tapped = Tapped(net.eval())
    return probabilities(lambda chunk: tapped(chunk)[0], x, temperature=temperature)


def backend_probs(candidate: Backend, x: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """A served backend's probabilities."""
    return probabilities(lambda chunk: torch.from_numpy(candidate(chunk).logits), x, temperature=temperature)


def compare(ref: torch.Tensor, got: torch.Tensor, labels: torch.Tensor) -> Parity:
    """A candidate's probabilities ``got`` against the fp32 network's ``ref`` on labelled images."""
    fp32_acc = float((ref.argmax(1) == labels).float().mean())
    acc = float((got.argmax(1) == labels).float().mean())
    return Parity(
        images=len(labels),
        agreement=float((ref.argmax(1) == got.argmax(1)).float().mean()),
        fp32_accuracy=fp32_acc,
        accuracy=acc,
        accuracy_drop=fp32_acc - acc,
        max_abs_prob_diff=float((ref - got).abs().max()),
    )


def parity(
    net: torch.nn.Module,
    candidate: Backend,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> Parity:
    """Compare ``candidate`` with the fp32 ``net`` on normalised images ``x`` (served probabilities)."""
    ref = reference_probs(net, x, temperature=temperature)
    return compare(ref, backend_probs(candidate, x, temperature=temperature), labels)


def normaliser(ctx: ExportContext) -> EvalPreset:
    """The export's normalisation (uint8 pixels -> the network's input)."""
    pre = ctx.metadata["preprocessing"]
    return EvalPreset(mean=float(pre["mean"]), std=float(pre["std"]))


def quantize(ctx: ExportContext, fp32_path: Path, path: Path) -> dict[str, Any]:
    """``fp32_path`` quantised to int8 at ``path`` (then removed: only served graphs ship).

    Calibrated on :data:`CALIBRATION_IMAGES` TRAINING images (seed 0); returns that record.
    """
    train, _ = ctx.pixels("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
    quantize_int8(fp32_path, path, normaliser(ctx)(train[pick]))
    fp32_path.unlink()
    return {"split": "train", "images": len(pick), "seed": 0}


def held_out(ctx: ExportContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised :data:`HELD_OUT` images and their labels: what the parity gates judge on."""
    held = [ctx.pixels(split) for split in HELD_OUT]
    return normaliser(ctx)(torch.cat([pixels for pixels, _ in held])), torch.cat([t for _, t in held])


def judge(ctx: ExportContext, candidate: Backend) -> tuple[Parity, torch.Tensor, torch.Tensor]:
    """``candidate`` against the fp32 network on the held-out images: the parity, both probabilities.

    The fp32 network's probabilities are computed on the first call of an export and kept in
    its context for the next gate.
    """
    x, labels = held_out(ctx)
    temperature = float(ctx.metadata.get("temperature", 1.0))
    if "reference" not in ctx.cache:
        ctx.cache["reference"] = reference_probs(ctx.net, x, temperature=temperature)
    ref: torch.Tensor = ctx.cache["reference"]
    got = backend_probs(candidate, x, temperature=temperature)
    return compare(ref, got, labels), ref, got
