"""Export step: the served precision's artefact, admitted only through a parity gate.

``make mar PRECISION=int8|onnx-fp32|fp32`` (default: the measured winner,
:data:`lightning_app.inference.backends.DEFAULT_PRECISION`, when the training data is at
hand; eager ``fp32`` otherwise, noted in the metadata). For ``int8`` the fp32 network is
exported to ONNX and statically quantised with activation ranges calibrated on
``CALIBRATION_IMAGES`` TRAINING images. Then the artefact and the fp32 network (the
Lightning model's own weights) both classify the held-out images (validation + test
together) and the export is refused (:class:`~lightning_app.export.context.ExportError`) unless

* top-1 agreement >= ``min_agreement`` (99.5 %), and
* accuracy drop <= ``max_accuracy_drop`` (0.25 points).

On a small data set the gate cannot be judged: with fewer held-out images than
:func:`judged_from` (400 for a 0.25-point accuracy drop) a single flipped image fails it.
There, when no precision was asked for, a refused artefact is dropped and the export ships
eager fp32, with the reason under ``backend["note"]`` and in one printed line; an explicitly
requested precision is still refused.

The maximum absolute difference of the served (temperature-scaled) probabilities is
reported too; everything measured goes into ``model_meta.json`` under ``backend``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_app.export.context import ExportContext, ExportError
from lightning_app.inference import artefacts
from lightning_app.inference.backends import (
    DEFAULT_PRECISION,
    PRECISIONS,
    OnnxBackend,
    export_onnx,
    quantize_int8,
)
from lightning_app.inference.forward import Backend
from lightning_app.inference.tapped import Tapped
from lightning_app.transforms import EvalPreset

#: Training images used to calibrate int8 activation ranges (a seeded random sample).
CALIBRATION_IMAGES = 100
HELD_OUT = ("val", "test")


@dataclass(frozen=True)
class ParityBounds:
    """How far a served artefact may disagree with the fp32 network on held-out images."""

    min_agreement: float = 0.995
    max_accuracy_drop: float = 0.0025


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
        out = []
        if self.agreement < bounds.min_agreement:
            out.append(f"top-1 agreement {self.agreement:.2%} < {bounds.min_agreement:.2%}")
        if self.accuracy_drop > bounds.max_accuracy_drop:
            out.append(
                f"accuracy drop {100 * self.accuracy_drop:.2f} points > {100 * bounds.max_accuracy_drop:.2f}"
            )
        return out


@torch.inference_mode()
def served_probs(
    net: torch.nn.Module, candidate: Backend, x: torch.Tensor, *, temperature: float = 1.0, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 ``net``'s and ``candidate``'s served probabilities, ``softmax(logits / temperature)``."""
    reference = Tapped(net.eval())
    ref_probs, probs = [], []
    for chunk in x.split(batch):
        ref_probs.append((reference(chunk)[0].float() / temperature).softmax(1))
        probs.append((torch.from_numpy(candidate(chunk).logits) / temperature).softmax(1))
    return torch.cat(ref_probs), torch.cat(probs)


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
    return compare(*served_probs(net, candidate, x, temperature=temperature), labels)


def judged_from(bounds: ParityBounds) -> int:
    """Fewest held-out images on which one flipped answer does not by itself break a bound."""
    return math.ceil(1 / max(1e-6, min(1 - bounds.min_agreement, bounds.max_accuracy_drop)))


def choose(ctx: ExportContext) -> str:
    """The requested precision, or the default: the winner with data, eager fp32 without."""
    requested = ctx.options.get("precision")
    if requested is None:
        return DEFAULT_PRECISION if ctx.data_dir is not None else "fp32"
    if requested not in PRECISIONS:
        raise ExportError(f"unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    return str(requested)


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


def precision_step(ctx: ExportContext, bounds: ParityBounds | None = None) -> None:
    """Write the chosen precision's artefact into the export, after the parity gate."""
    bounds = bounds or ctx.options.get("parity_bounds") or ParityBounds()
    precision = choose(ctx)
    record: dict[str, Any] = {"precision": precision}
    ctx.metadata["backend"] = record
    if PRECISIONS[precision] is None:
        if ctx.data_dir is None and ctx.options.get("precision") is None:
            record["note"] = (
                f"no training data given: {DEFAULT_PRECISION} needs it (calibration, parity gate)"
            )
        return
    if ctx.data_dir is None:
        raise ExportError(
            f"precision {precision} needs the training data (--data) for calibration and its gate"
        )
    channels, size = int(ctx.metadata["in_channels"]), int(ctx.metadata["preprocessing"]["image_size"])
    path = export_onnx(
        ctx.net,
        ctx.out_dir / artefacts.ONNX_FP32,
        in_channels=channels,
        image_size=size,
        backbone=str(ctx.metadata["backbone"]),
    )
    if precision == "int8":
        fp32_path, path = path, ctx.out_dir / artefacts.ONNX_INT8
        record["calibration"] = quantize(ctx, fp32_path, path)
    x, labels = held_out(ctx)
    temperature = float(ctx.metadata.get("temperature", 1.0))
    result = parity(ctx.net, OnnxBackend(path, name=precision), x, labels, temperature=temperature)
    record.update(
        file=path.name,
        parity={**asdict(result), "splits": list(HELD_OUT), "bounds": asdict(bounds)},
    )
    problems = result.violations(bounds)
    if problems and ctx.options.get("precision") is None and result.images < judged_from(bounds):
        # the default precision on a small held-out set: one flipped image already fails it
        path.unlink()
        why = (
            f"the {precision} parity gate cannot be judged on {result.images} held-out images "
            f"(needs {judged_from(bounds)}; {'; '.join(problems)})"
        )
        ctx.metadata["backend"] = {"precision": "fp32", "note": why, "refused": record}
        print(f"backend: fp32 ({why})")
        return
    if problems:
        raise ExportError(
            f"parity gate refused the {precision} artefact on {result.images} held-out images: "
            + "; ".join(problems)
            + f" (max |prob diff| {result.max_abs_prob_diff:.3f}); use PRECISION=fp32"
        )
    ctx.files.append(path)
