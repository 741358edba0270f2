"""Class-activation heatmaps: where in the scan the model found evidence for a class.

Each backbone's own method and layer are named in :data:`~lightning_app.inference.taps.CAM_LAYERS`:

* ``cam`` — class activation mapping (Zhou et al. 2016) for heads that are global average
  pooling followed by a linear layer (ResNets, EfficientNet, ``small_cnn``):
  ``map_c = ReLU(sum_k W[c, k] * A_k / (h * w))`` from the activations ``A`` of the last conv
  block, returned by the SAME forward pass that gives the logits (the served backend's
  ``cam`` output: eager fp32, ONNX fp32 or int8). No backward pass, no second network. On
  such heads it equals Grad-CAM exactly (the gradient of ``logit_c`` with respect to ``A_k``
  is ``W[c, k] / (h * w)`` everywhere). ``W`` is the fp32 final linear layer of the exported
  ``state_dict``; with the int8 backend ``A`` is the int8 graph's (dequantised) activations.
* ``grad-cam`` — Grad-CAM (Selvaraju et al. 2017) for heads where that identity fails
  (MobileNet-V3's two-layer classifier): channel weights are the spatially averaged gradients
  of the target logit, one backward pass, always on a fp32 PyTorch copy of the weights (ONNX
  Runtime has none); so is CAM for an artefact of format 2 (graphs without ``cam``).

Finer maps (``SERVE_HEATMAP``, :data:`~lightning_app.inference.taps.HEATMAP_METHODS`; a
ResNet's CAM has 4x4 cells at 128 px, ``make bench-localise``): ``layer-cam`` and
``gradient-input`` back-propagate through fp32 torch
(:class:`~lightning_app.inference.gradcam.FinePass`: the eager backend's own network, else
a copy); ``occlusion`` (:mod:`~lightning_app.inference.occlusion`) runs the served forward
pass on blacked-out copies, torch-free. ``auto`` (the default) is
:data:`~lightning_app.inference.taps.EAGER_DEFAULT` on eager torch, the served CAM on ONNX.
The map is upsampled (bilinear) to the input grid, scaled to ``[0, 1]`` by its maximum and
sent as a base64 8-bit PNG (:func:`encode_png`); ``explanation.method``, ``.layer`` and
``.backend`` name what made it. The prediction block is always the served backend's, as
``/predictions``. Without torch, a method that needs it raises
:class:`~lightning_app.inference.engine.TorchMissingError`.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightning_app.inference import artefacts, occlusion, ptfile
from lightning_app.inference.engine import InferenceEngine, import_eager
from lightning_app.inference.forward import Forward
from lightning_app.inference.taps import (
    CAM_LAYERS,
    EAGER_DEFAULT,
    FINE_METHODS,
    OCCLUSION,
    CamSpec,
    Method,
    cam_spec,
    fine_layer,
)

__all__ = ["CAM_LAYERS", "CamSpec", "Explained", "Explainer", "Method", "cam_spec"]


@dataclass(frozen=True)
class Explained:
    """One batch: the forward pass and one heatmap per image."""

    forward: Forward
    maps: np.ndarray  # float32 [N, S, S] in [0, 1]
    peaks: np.ndarray  # float32 [N]: each raw map's maximum (0: no positive evidence)
    targets: list[int]
    cells: int = 0  # the raw map's side before upsampling (4 for a ResNet's CAM at 128 px)


def class_activation(activations: Any, weights: Any) -> np.ndarray:
    """``ReLU(sum_k weights[n, k] * activations[n, k])`` -> ``[N, h, w]``."""
    a, w = np.asarray(activations, dtype=np.float32), np.asarray(weights, dtype=np.float32)
    out: np.ndarray = np.maximum(np.einsum("nk,nkhw->nhw", w, a), 0)
    return out


def _bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows and weights of a bilinear resize along one axis (half-pixel centres, as torch's)."""
    src = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(src.astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (src - low)[:, None]


def upsample(raw: np.ndarray, size: int) -> np.ndarray:
    """Bilinear ``[N, h, w]`` -> ``[N, size, size]`` (``align_corners=False``, no antialiasing)."""
    low, high, frac = _bilinear_axis(raw.shape[1], size)
    rows = raw[:, low] * (1 - frac) + raw[:, high] * frac  # [N, size, w]
    low, high, frac = _bilinear_axis(raw.shape[2], size)
    out: np.ndarray = rows[:, :, low] * (1 - frac[:, 0]) + rows[:, :, high] * frac[:, 0]
    return out


def to_grid(raw: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Upsample ``[N, h, w]`` maps to ``[N, size, size]``, scaled to ``[0, 1]``; also the raw peaks."""
    raw = np.asarray(raw, dtype=np.float32)
    up = np.maximum(upsample(raw, size), 0)
    peaks = raw.reshape(len(raw), -1).max(axis=1)
    scale = np.maximum(up.reshape(len(up), -1).max(axis=1), 1e-12)[:, None, None]
    maps = np.where(peaks[:, None, None] > 0, up / scale, 0.0)
    return maps.astype(np.float32), peaks.astype(np.float32)


def encode_png(heatmap: Any) -> str:
    """A ``[S, S]`` map in ``[0, 1]`` -> base64 of an 8-bit grayscale PNG (0..255 = 0..max)."""
    pixels = np.round(np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(data: str) -> np.ndarray:
    """Inverse of :func:`encode_png`: ``uint8 [S, S]`` (for clients and tests)."""
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("L"))


def class_weights(weight: np.ndarray, num_classes: int) -> np.ndarray:
    """A final-layer weight ``[N*C, K]`` folded to ``[C, K]``: the mean over ``N`` ensemble members.

    An ensemble's classifier is block-diagonal (:class:`lightning_app.models.ensemble.Ensemble`),
    so the fold gives each class the members' weights side by side, divided by ``N``: its CAM is
    the mean of the members' CAMs. A single network's ``[C, K]`` comes back unchanged.
    """
    rows, cols = weight.shape
    folded: np.ndarray = weight.reshape(rows // num_classes, num_classes, cols).mean(axis=0)
    return folded


def head_weight(model_dir: Path) -> np.ndarray:
    """The final linear layer's weight ``[C, K]`` from the exported ``state_dict.pt``, without torch.

    The classification layer is the network's last ``nn.Linear``
    (:func:`lightning_app.models.backbones.final_linear`), and a ``state_dict`` lists
    parameters in module order: its weight is the last 2-D ``*.weight`` entry.
    """
    state = ptfile.load(Path(model_dir) / artefacts.WEIGHTS)
    linear = [v for k, v in state.items() if k.endswith("weight") and np.ndim(v) == 2]
    if not linear:
        raise ValueError(f"{artefacts.WEIGHTS} has no linear layer")
    return np.asarray(linear[-1], dtype=np.float32)


def choose_method(method: str | None, *, eager: bool) -> str:
    """The heatmap method to use: ``method``, or for ``None``/``auto`` the default of the backend.

    ``auto`` is :data:`~lightning_app.inference.taps.EAGER_DEFAULT` on an eager torch backend and
    ``cam`` (the served pass, torch-free) on an ONNX one. ``method`` is trusted to be one of
    :data:`~lightning_app.inference.taps.HEATMAP_METHODS`: the edges check it
    (:meth:`~lightning_app.inference.settings.ServeSettings.from_env`, the benchmarks' options).
    """
    if method is None or method == "auto":
        return EAGER_DEFAULT if eager else "cam"
    return method


class Explainer:
    """Heatmaps for an :class:`InferenceEngine`'s model; the prediction block is the served one.

    Every explanation runs the engine's own forward pass (the served backend: probabilities
    and OOD block as ``/predictions``). For a CAM head whose backend exposes the
    class-activation layer (eager fp32, ONNX artefacts of format 3+), that pass yields the
    heatmap, with numpy; otherwise (Grad-CAM, an older artefact, a given ``net``) a fp32 torch
    copy does (:class:`~lightning_app.inference.gradcam.TorchPass`). ``net`` also replaces
    the served network for the finer methods (``make bench-localise``'s randomised control);
    ``layer`` is ``layer-cam``'s, where not :func:`~lightning_app.inference.taps.fine_layer`'s.
    """

    def __init__(
        self, engine: InferenceEngine, net: Any = None, method: str | None = None, layer: str | None = None
    ) -> None:
        self.engine = engine
        self.spec = cam_spec(str(engine.meta["backbone"]))
        backend = engine.backend
        shared = getattr(backend, "net", None)  # the eager backend's own network
        chosen = choose_method(method, eager=shared is not None)  # ``method`` ``None``: ``auto``
        #: The heatmap method and layer the answers name: a finer method, or the backbone's own.
        self.method: str = chosen if chosen in (*FINE_METHODS, OCCLUSION) else self.spec.method
        self.layer = self.spec.layer
        self.fine: Any = None  # the FinePass, for the methods finer than the CAM
        self.logits_of: Any = None  # occlusion's forward pass: the served one, or ``net``'s
        if chosen in FINE_METHODS:
            return self._fine(net if net is not None else shared, layer)
        if chosen == OCCLUSION:
            return self._occlusion(net)
        #: Heatmaps from the served forward pass (no second network)?
        self.served = net is None and self.spec.method == "cam" and bool(getattr(backend, "has_cam", False))
        self.backend_name = backend.name if self.served else "fp32"
        self.second: Any = None  # the TorchPass, where the heatmap needs one
        if self.served:
            weight = self._weight_of(shared) if shared is not None else head_weight(engine.model_dir)
            self.weight = class_weights(weight, int(engine.meta["num_classes"]))
            return
        why = f"{self.spec.method} heatmaps of backbone {engine.meta['backbone']!r} (a second fp32 pass)"
        eager = import_eager(why)
        from lightning_app.inference.gradcam import TorchPass

        net = net if net is not None else eager.load_network(engine.model_dir, engine.meta)
        self.weight = class_weights(self._weight_of(net), int(engine.meta["num_classes"]))
        self.second = TorchPass(net, self.spec, self.weight)

    def _fine(self, net: Any, layer: str | None) -> None:
        """Set up :class:`~lightning_app.inference.gradcam.FinePass` on ``net`` (``None``: a fp32 copy)."""
        backbone = str(self.engine.meta["backbone"])
        self.layer = layer if layer and self.method == "layer-cam" else fine_layer(backbone, self.method)
        self.served, self.backend_name, self.second = False, "fp32", None
        eager = import_eager(f"{self.method} heatmaps (a backward pass)")
        from lightning_app.inference.gradcam import FinePass

        net = net if net is not None else eager.load_network(self.engine.model_dir, self.engine.meta)
        self.fine = FinePass(net, self.method, self.layer)
        black = np.zeros((1, *self.engine.input_shape), dtype=np.uint8)
        self.baseline = self.engine.normalise(black)  # gradient x input's reference: a black scan

    def _occlusion(self, net: Any) -> None:
        """Occlusion through the served forward pass, or through ``net`` (fp32 torch: a control)."""
        self.layer, self.served, self.second = occlusion.LAYER, False, None
        self.occluded_served = net is None  # the served pass's logits are the unoccluded ones
        backend = self.engine.backend if net is None else import_eager("occlusion").TorchBackend(net)
        self.backend_name = backend.name
        self.logits_of = lambda pixels: backend(self.engine.normalise(pixels)).logits

    @staticmethod
    def _weight_of(net: Any) -> np.ndarray:
        from lightning_app.inference.gradcam import final_weight

        return final_weight(net)

    def target_index(self, target: str | int | None, predicted: int) -> int:
        """A class name or index (``None``: the predicted class) -> index; ``ValueError`` if unknown."""
        names = self.engine.class_names
        if target is None or (isinstance(target, str) and not target.strip()):
            return predicted
        if isinstance(target, str) and target.strip() in names:
            return names.index(target.strip())
        try:
            index = int(target)
        except ValueError:
            index = -1
        if 0 <= index < len(names):
            return index
        choices = ", ".join(names)
        raise ValueError(
            f"unknown target {target!r}: give a class name ({choices}) or an index 0..{len(names) - 1}"
        )

    def explain(self, pixels: Any, targets: list[str | int | None] | None = None) -> Explained:
        """``uint8 [N, 1, S, S]`` -> the served forward pass and one heatmap per image (``[N, S, S]``)."""
        wanted: list[str | int | None] = list(targets) if targets is not None else [None] * len(pixels)
        for target in wanted:  # fail before any work on a bad target
            self.target_index(target, 0)
        # the served backend: the /predictions numbers (and, for CAM, the activations)
        forward = self.engine.forward(pixels, cam=self.served)
        predicted = forward.logits.argmax(axis=1).tolist()
        chosen = [self.target_index(t, p) for t, p in zip(wanted, predicted, strict=True)]
        if self.fine is not None:
            raw = self.fine.maps(self.engine.normalise(np.asarray(pixels)), chosen, self.baseline)
        elif self.logits_of is not None:
            served = forward.logits if self.occluded_served else None
            raw = occlusion.occlusion_maps(self.logits_of, pixels, chosen, served)
        elif self.served:
            assert forward.cam is not None, "the served backend returned no class-activation output"
            h, w = forward.cam.shape[-2:]
            raw = class_activation(forward.cam, self.weight[chosen] / (h * w))
        else:
            raw = class_activation(
                *self.second.activations(self.engine.normalise(np.asarray(pixels)), chosen)
            )
        maps, peaks = to_grid(raw, int(pixels.shape[-1]))
        return Explained(forward=forward, maps=maps, peaks=peaks, targets=chosen, cells=int(raw.shape[-1]))

    def answers(self, pixels: Any, targets: list[str | int | None] | None = None) -> list[dict[str, Any]]:
        """The prediction block of each image (as ``/predictions``) plus its ``explanation``."""
        return self.answers_of(self.explain(pixels, targets))

    def answers_of(self, explained: Explained) -> list[dict[str, Any]]:
        """The answers of an :meth:`explain` result (its forward pass stays the caller's to reuse)."""
        blocks = self.engine.answers(explained.forward)
        size = int(explained.maps.shape[-1])
        for block, heatmap, peak, target in zip(
            blocks, explained.maps, explained.peaks, explained.targets, strict=True
        ):
            block["explanation"] = {
                "method": self.method,
                "layer": self.layer,
                "backend": self.backend_name,
                "target": self.engine.class_names[target],
                "target_index": target,
                "shape": [size, size],
                "encoding": "png-base64",
                "heatmap": encode_png(heatmap),
                "peak": float(peak),
            }
        return blocks
