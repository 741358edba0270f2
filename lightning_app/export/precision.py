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
from dataclasses import asdict
from typing import Any

from lightning_app.export.context import ExportContext, ExportError
from lightning_app.export.gate import HELD_OUT, judge, quantize
from lightning_app.inference import artefacts
from lightning_app.inference.backends import DEFAULT_PRECISION, PRECISIONS, OnnxBackend, export_onnx
from lightning_app.inference.parity import ParityBounds


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
    result, _, _ = judge(ctx, OnnxBackend(path, name=precision))
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
