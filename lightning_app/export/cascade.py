"""Export step: an ensemble served as a cascade, admitted only through its own gate.

``make mar CASCADE=0.9 CASCADE_MARGIN=2`` (options ``cascade``, a
:class:`~lightning_app.inference.cascade.CascadeRule`): after
:mod:`~lightning_app.export.precision` has shipped the ensemble's graph, the first member's
graph (:meth:`~lightning_app.models.ensemble.Ensemble.leader`) and the other members' graph
(:meth:`~lightning_app.models.ensemble.Ensemble.followers`) are exported beside it at the
same precision (int8: calibrated on the same training images), and the served cascade is
judged against the fp32 ENSEMBLE on the held-out images (validation + test), the way
:mod:`~lightning_app.export.gate` judges every served artefact. It is refused
(:class:`~lightning_app.export.context.ExportError`) unless, against that ensemble,

* top-1 agreement >= ``min_agreement`` and accuracy drop <= ``max_accuracy_drop``
  (:data:`CASCADE_BOUNDS`: the cascade approximates the ensemble by design, so top-1 agreement
  is held to 99 %, not the int8 graph's 99.5 %), and
* with an operating point, the screening ``decision`` agrees on >= ``min_agreement`` of the images.

With the ``cascade_fallback`` option (``make mar CASCADE_FALLBACK=1``, what ``make demo``
uses) a refused cascade is not an error: the whole ensemble's graph, already shipped and
gated, is served, and the refusal is recorded under ``backend.cascade_refused``.

Everything measured (the share of scans deferred to the other members included) goes into
``model_meta.json`` under ``backend.cascade``; the two graphs replace the ensemble's whole
graph in the archive (``replaces``: they hold the same weights, and it would never run), and
the engine serves the cascade (:func:`lightning_app.inference.backends.load_backend`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lightning_app.export.context import ExportContext, ExportError
from lightning_app.export.gate import HELD_OUT, judge, quantize
from lightning_app.inference import artefacts
from lightning_app.inference.backends import OnnxBackend, export_onnx
from lightning_app.inference.cascade import CascadeBackend, CascadeRule
from lightning_app.inference.parity import ParityBounds
from lightning_app.models.ensemble import Ensemble
from lightning_app.models.screening import OperatingPoint, agreement

#: How far the served cascade may answer otherwise than the fp32 ensemble it stands for.
CASCADE_BOUNDS = ParityBounds(min_agreement=0.99, max_accuracy_drop=0.0025)


def cascade_step(ctx: ExportContext) -> None:
    """Ship the cascade's two graphs and its rule, after the cascade's gate (no option: nothing)."""
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
    served = str(record["file"])
    channels, size = int(ctx.metadata["in_channels"]), int(ctx.metadata["preprocessing"]["image_size"])
    graphs = []
    parts = ((ctx.net.leader(), artefacts.first_member), (ctx.net.followers(), artefacts.followers))
    for part, name in parts:
        path, fp32 = ctx.out_dir / name(served), ctx.out_dir / name(artefacts.ONNX_FP32)
        export_onnx(part.eval(), fp32, in_channels=channels, image_size=size, backbone=backbone)
        if precision == "int8":
            quantize(ctx, fp32, path)  # the same training images as the ensemble's graph
        graphs.append(path)
    names = [str(n) for n in ctx.metadata["class_names"]]
    point = OperatingPoint.from_dict(ctx.metadata.get("operating_point"))
    backend = CascadeBackend(
        OnnxBackend(graphs[0], name=f"{precision}-first"),
        OnnxBackend(graphs[1], name=precision),
        rule,
        names,
        members=len(ctx.net.members),
        operating_point=point,
        temperature=float(ctx.metadata.get("temperature", 1.0)),
    )
    result, ref, got = judge(ctx, backend)
    measured: dict[str, Any] = {**asdict(result), "deferred": backend.deferred / max(1, backend.seen)}
    if point is not None:
        measured["decision_agreement"] = agreement(point, names, ref.tolist(), got.tolist())
    problems = CASCADE_BOUNDS.violations(measured)
    if problems:
        for graph in graphs:
            graph.unlink()
        refusal = (
            f"the cascade gate refused confidence {rule.confidence}, margin {rule.margin} "
            f"against the fp32 ensemble on {result.images} held-out images: " + "; ".join(problems)
        )
        if not ctx.options.get("cascade_fallback"):
            raise ExportError(refusal + " (raise CASCADE, or drop it to serve the whole ensemble)")
        record["cascade_refused"] = {"rule": rule.as_dict(), "parity": measured, "problems": problems}
        print(f"{refusal}: serving the whole ensemble ({served})")
        return
    whole = ctx.out_dir / served  # the two graphs hold the same weights: it would never run
    ctx.files.remove(whole)
    whole.unlink()
    record["cascade"] = {
        "file": graphs[0].name,
        "followers": graphs[1].name,
        "members": len(ctx.net.members),
        "replaces": served,
        "rule": rule.as_dict(),
        "parity": {**measured, "splits": list(HELD_OUT), "bounds": asdict(CASCADE_BOUNDS)},
    }
    ctx.files.extend(graphs)
    deferred = 100 * measured["deferred"]
    print(
        f"cascade: {graphs[0].name} + {graphs[1].name}, "
        f"{deferred:.1f} % of {result.images} held-out scans deferred to the other members"
    )
