"""Inference backends other than eager PyTorch: ONNX Runtime fp32 and int8.

Chosen by measurement (docs/benchmarks.md, "Inference backends"): on this 2-vCPU AVX-512
CPU, ONNX Runtime with a statically quantised int8 graph (QDQ, per-channel int8 weights,
uint8 activations calibrated on training images) runs ResNet-18 at 128 px several times
faster than eager fp32. The ONNX graph has the outputs of
:class:`~lightning_app.inference.taps.Tapped`: ``logits``, ``features`` (the input of the
final ``nn.Linear``), ``cam`` (the class-activation layer's output, CAM heads only) and the
pooled ``stage_*`` statistics (the OOD feature ensemble), so a backend here returns the same
:class:`~lightning_app.inference.forward.Forward` as the eager one. ``cam`` is fetched only
when an explanation asks for it (``session.run`` names the outputs it wants); graphs
exported before it existed (format version 2) simply lack it, and explanations then fall
back to a fp32 pass.

Building the artefacts (:func:`export_onnx`, :func:`quantize_int8`) needs torch and the
``onnx`` package (export time, imported there); running them (:class:`OnnxBackend`) needs
numpy and ``onnxruntime`` only: no torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_app.inference import artefacts
from lightning_app.inference.cascade import CascadeBackend, CascadeRule
from lightning_app.inference.forward import Forward, forward_from
from lightning_app.inference.taps import CAM, STAGE_PREFIX
from lightning_app.inference.threads import threads_per_worker
from lightning_app.models.screening import OperatingPoint

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``precision`` values and the artefact each one loads (``fp32`` is eager PyTorch).
PRECISIONS: dict[str, str | None] = {
    "fp32": None,
    "onnx-fp32": artefacts.ONNX_FP32,
    "int8": artefacts.ONNX_INT8,
}
#: The measured winner (docs/benchmarks.md): what ``make mar`` builds by default.
DEFAULT_PRECISION = "int8"
INPUT, OUTPUTS = "pixels", ("logits", "features")  # every graph has these two


def export_onnx(
    net: nn.Module, path: Path, *, in_channels: int, image_size: int, backbone: str | None = None
) -> Path:
    """Write ``net`` (fp32, eval) as ONNX with a dynamic batch axis and every :class:`Tapped` output.

    ``backbone`` names the taps (:data:`~lightning_app.inference.taps.CAM_LAYERS`,
    :data:`~lightning_app.inference.taps.STAGE_LAYERS`); without it, only ``logits`` and
    ``features``.
    """
    import torch

    from lightning_app.inference.tapped import Tapped

    tapped = Tapped.for_backbone(net.eval(), backbone) if backbone else Tapped(net.eval())
    example = torch.zeros(2, in_channels, image_size, image_size)
    torch.onnx.export(
        tapped,
        (example,),
        str(path),
        input_names=[INPUT],
        output_names=list(tapped.output_names),
        dynamic_axes={name: {0: "batch"} for name in (INPUT, *tapped.output_names)},
        opset_version=17,
        dynamo=False,
    )
    return path


class _Calibration:
    """ONNX Runtime's calibration reader over normalised ``float32`` batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_int8(fp32_onnx: Path, path: Path, calibration: torch.Tensor, *, batch: int = 16) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, uint8 activations) of an ONNX model.

    ``calibration`` is normalised ``float32 [N, C, S, S]`` from the TRAINING split only:
    activation ranges must never be fitted on the images the model is judged on.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [chunk.contiguous().numpy() for chunk in calibration.split(batch)]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            _Calibration(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return path


class OnnxBackend:
    """ONNX Runtime on the CPU: normalised ``float32 [N, C, S, S]`` -> :class:`Forward`."""

    def __init__(self, path: Path, *, name: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or threads_per_worker(1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between requests: the JVM and the decoder share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name = name
        names = [output.name for output in self.session.get_outputs()]
        #: Outputs every prediction fetches (the OOD guard reads the stages); ``cam`` on demand.
        self.outputs = [n for n in names if n in OUTPUTS or n.startswith(STAGE_PREFIX)]
        self.has_cam = CAM in names
        #: The feature sources each forward returns (``Forward.sources()`` keys).
        self.source_names = [n for n in self.outputs if n != "logits"]

    def __call__(self, x: Any, *, cam: bool = False) -> Forward:
        """Run one batch (numpy, or a CPU tensor); outputs ``float32`` (``cam`` if asked and exported)."""
        names = self.outputs + ([CAM] if cam and self.has_cam else [])
        pixels = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        outputs = self.session.run(names, {INPUT: pixels})
        return forward_from(names, outputs, cam=cam)


def precision_of(meta: dict[str, Any], requested: str | None = None) -> str:
    """The precision to serve: ``requested`` (a server's ``SERVE_PRECISION``), else the export's."""
    chosen = requested or str(meta.get("backend", {}).get("precision", "fp32"))
    if chosen not in PRECISIONS:
        raise ValueError(f"unknown precision {chosen!r}: expected one of {', '.join(PRECISIONS)}")
    return chosen


def cascade_of(meta: dict[str, Any], precision: str) -> dict[str, Any] | None:
    """The export's cascade record (``backend.cascade``) when it serves ``precision``, else ``None``."""
    record = meta.get("backend", {})
    cascade: dict[str, Any] | None = record.get("cascade")
    return cascade if cascade and record.get("precision") == precision else None


def load_backend(
    model_dir: Path, meta: dict[str, Any], *, precision: str | None = None, threads: int | None = None
) -> OnnxBackend | CascadeBackend | None:
    """The exported ONNX backend to serve, or ``None`` for eager fp32 (or a missing artefact).

    ``precision`` overrides the export's choice (:func:`precision_of`); ``threads`` sets ONNX
    Runtime's intra-op threads (``None``/``0``: the usable cores). An export with a cascade
    (:func:`cascade_of`, an ensemble's) serves its two graphs at the precision it was built for
    (they replace the ensemble's whole graph in the archive).
    """
    precision = precision_of(meta, precision)
    name = PRECISIONS[precision]
    cascade = cascade_of(meta, precision)
    if name is None or (cascade is None and not (Path(model_dir) / name).is_file()):
        return None
    if cascade is None:
        return OnnxBackend(Path(model_dir) / name, name=precision, threads=threads)
    graphs = [Path(model_dir) / str(cascade.get(key, f"<{key}>")) for key in ("file", "followers")]
    if missing := [g.name for g in graphs if not g.is_file()]:
        raise ValueError(
            f"the export's cascade graph {' and '.join(missing)} is missing: re-export the model (make mar)"
        )
    return CascadeBackend(
        OnnxBackend(graphs[0], name=f"{precision}-first", threads=threads),
        OnnxBackend(graphs[1], name=precision, threads=threads),
        CascadeRule.from_dict(cascade["rule"]),
        artefacts.class_names(Path(model_dir), meta),
        members=int(cascade["members"]),
        operating_point=OperatingPoint.from_dict(meta.get("operating_point")),
        temperature=float(meta.get("temperature", 1.0)),
    )
