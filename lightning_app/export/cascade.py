"""Export step: an ensemble served as a cascade, admitted only through its own gate.

``make mar CASCADE=0.9 CASCADE_MARGIN=2`` (options ``cascade``, a
:class:`~lightning_app.inference.cascade.CascadeRule`): after
:mod:`~lightning_app.export.precision` has shipped the ensemble's graph, the first member's
graph (:meth:`~lightning_app.models.ensemble.Ensemble.leader`) is exported beside it at the
same precision (int8: calibrated on the same training images) and the served cascade is judged
against the fp32 ENSEMBLE on the held-out images (validation + test). It is refused
(:class:`~lightning_app.export.context.ExportError`) unless, against that ensemble,

* top-1 agreement >= ``min_agreement`` and accuracy drop <= ``max_accuracy_drop``
  (:data:`CASCADE_BOUNDS`: the cascade approximates the ensemble by design, so top-1 agreement
  is held to 99 %, not the int8 graph's 99.5 %), and
* with an operating point, the screening ``decision`` agrees on >= ``min_agreement`` of the images.

Everything measured (the share of scans deferred to the ensemble included) goes into
``model_meta.json`` under ``backend.cascade``; the engine then serves the cascade
(:func:`lightning_app.inference.backends.load_backend`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lightning_app.export.context import ExportContext, ExportError
from lightning_app.export.precision import HELD_OUT, ParityBounds, compare, held_out, quantize, served_probs
from lightning_app.inference import artefacts
from lightning_app.inference.backends import OnnxBackend, export_onnx
from lightning_app.inference.cascade import CascadeBackend, CascadeRule
from lightning_app.models.ensemble import Ensemble
from lightning_app.models.screening import OperatingPoint, agreement

#: How far the served cascade may answer otherwise than the fp32 ensemble it stands for.
CASCADE_BOUNDS = ParityBounds(min_agreement=0.99, max_accuracy_drop=0.0025)


def cascade_step(ctx: ExportContext) -> None:
    """Ship the first member's graph and the cascade's rule, after the cascade's gate (no option: nothing)."""
    rule: CascadeRule | None = ctx.options.get("cascade")
    if rule is None:
        return
    backbone = str(ctx.metadata["backbone"])
    if not isinstance(ctx.net, Ensemble):
        raise ExportError(f"a cascade needs an ensemble (make fit-ensemble); {backbone} is one network")
    record: dict[str, Any] = ctx.metadata["backend"]
    precision = str(record["precision"])
    if "file" not in record:
        raise ExportError(
            f"a cascade runs ONNX graphs, and this export serves {precision}: use PRECISION=int8"
        )
    served = ctx.out_dir / str(record["file"])
    first = ctx.out_dir / artefacts.first_member(served.name)
    channels, size = int(ctx.metadata["in_channels"]), int(ctx.metadata["preprocessing"]["image_size"])
    fp32 = ctx.out_dir / artefacts.first_member(artefacts.ONNX_FP32)
    export_onnx(ctx.net.leader().eval(), fp32, in_channels=channels, image_size=size, backbone=backbone)
    if precision == "int8":
        quantize(ctx, fp32, first)  # the same training images as the ensemble's graph
    names = [str(n) for n in ctx.metadata["class_names"]]
    point = OperatingPoint.from_dict(ctx.metadata.get("operating_point"))
    temperature = float(ctx.metadata.get("temperature", 1.0))
    backend = CascadeBackend(
        OnnxBackend(first, name=f"{precision}-first"),
        OnnxBackend(served, name=precision),
        rule,
        names,
        operating_point=point,
        temperature=temperature,
    )
    x, labels = held_out(ctx)
    ref, got = served_probs(ctx.net, backend, x, temperature=temperature)
    result = compare(ref, got, labels)
    problems = result.violations(CASCADE_BOUNDS)
    measured: dict[str, Any] = {**asdict(result), "deferred": backend.deferred / max(1, backend.seen)}
    if point is not None:
        measured["decision_agreement"] = agreement(point, names, ref.tolist(), got.tolist())
        agree, floor = measured["decision_agreement"], CASCADE_BOUNDS.min_agreement
        if agree < floor:
            problems.append(f"screening decisions agree on {agree:.2%} < {floor:.2%}")
    if problems:
        first.unlink()
        raise ExportError(
            f"the cascade gate refused confidence {rule.confidence}, margin {rule.margin} "
            f"against the fp32 ensemble on {result.images} held-out images: "
            + "; ".join(problems)
            + " (raise CASCADE, or drop it to serve the whole ensemble)"
        )
    record["cascade"] = {
        "file": first.name,
        "rule": rule.as_dict(),
        "parity": {**measured, "splits": list(HELD_OUT), "bounds": asdict(CASCADE_BOUNDS)},
    }
    ctx.files.append(first)
    deferred = 100 * measured["deferred"]
    print(
        f"cascade: {first.name}, {deferred:.1f} % of {result.images} held-out scans deferred to the ensemble"
    )
