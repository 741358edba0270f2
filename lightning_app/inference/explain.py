"""Class-activation heatmaps: where in the scan the model found evidence for a class.

Two methods, chosen per backbone in :data:`~lightning_app.inference.taps.CAM_LAYERS` (the one
place that names the layer):

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
  of the target logit, one backward pass. ONNX Runtime has no backward pass, so Grad-CAM
  always runs on a fp32 PyTorch copy of the same weights (a second pass), whatever backend
  serves the predictions; so does CAM for an artefact exported before the graphs had a
  ``cam`` output (format version 2).

The map is upsampled (bilinear) to the model's input grid and scaled to ``[0, 1]`` by its
maximum; :func:`encode_png` packs it as a base64 8-bit grayscale PNG. The prediction block
of an explanation always comes from the served backend, as ``/predictions``; the answer's
``explanation.backend`` names where the heatmap's activations came from.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lightning_app.inference.engine import InferenceEngine, load_network
from lightning_app.inference.forward import Forward
from lightning_app.inference.taps import CAM_LAYERS, CamSpec, Method, cam_spec
from lightning_app.models.backbones import final_linear

__all__ = ["CAM_LAYERS", "CamSpec", "Explained", "Explainer", "Method", "cam_spec"]


@dataclass(frozen=True)
class Explained:
    """One batch: the forward pass and one heatmap per image."""

    forward: Forward
    maps: torch.Tensor  # float32 [N, S, S] in [0, 1]
    peaks: torch.Tensor  # float32 [N]: each raw map's maximum (0: no positive evidence)
    targets: list[int]


def class_activation(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``ReLU(sum_k weights[n, k] * activations[n, k])`` -> ``[N, h, w]``."""
    return torch.einsum("nk,nkhw->nhw", weights.float(), activations.float()).clamp_min(0)


def to_grid(raw: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample ``[N, h, w]`` maps to ``[N, size, size]``, scaled to ``[0, 1]``; also the raw peaks."""
    up = F.interpolate(raw[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0)
    peaks = raw.flatten(1).amax(dim=1)
    scale = up.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    maps = torch.where(peaks[:, None, None] > 0, up / scale, torch.zeros_like(up))
    return maps.float(), peaks.float()


def encode_png(heatmap: torch.Tensor) -> str:
    """A ``[S, S]`` map in ``[0, 1]`` -> base64 of an 8-bit grayscale PNG (0..255 = 0..max)."""
    pixels = (heatmap.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(data: str) -> np.ndarray:
    """Inverse of :func:`encode_png`: ``uint8 [S, S]`` (for clients and tests)."""
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("L"))


class Explainer:
    """Heatmaps for an :class:`InferenceEngine`'s model; the prediction block is the served one.

    Every explanation runs the engine's own forward pass (the served backend, so the
    answer's probabilities and OOD block are exactly what ``/predictions`` gives). For a CAM
    head whose backend exposes the class-activation layer (eager fp32, and ONNX fp32/int8
    artefacts of format version 3+), that same pass yields the heatmap. Otherwise (Grad-CAM,
    an older artefact, or an explicitly given ``net``) a second pass through a fp32 copy of
    the weights makes the heatmap for the served prediction's class.
    """

    def __init__(self, engine: InferenceEngine, net: nn.Module | None = None) -> None:
        self.engine = engine
        self.spec = cam_spec(str(engine.meta["backbone"]))
        backend = engine.backend
        #: Heatmaps from the served forward pass (no second network)?
        self.served = net is None and self.spec.method == "cam" and bool(getattr(backend, "has_cam", False))
        self.backend_name = backend.name if self.served else "fp32"
        if net is None:  # the eager backend's own network when it serves the heatmap, else a fp32 copy
            shared = getattr(backend, "net", None) if self.served else None
            net = shared if isinstance(shared, nn.Module) else load_network(engine.model_dir, engine.meta)
        self.weight = final_linear(net).weight.detach().float().clone()  # [C, K], fp32
        self.net: nn.Module | None = None
        if not self.served:  # keep a fp32 network only where the heatmap needs one
            self.net = net.eval().to(memory_format=torch.channels_last)
            modules = dict(self.net.named_modules())
            if self.spec.layer not in modules:
                raise ValueError(f"{type(self.net).__name__} has no module {self.spec.layer!r}")
            modules[self.spec.layer].register_forward_hook(self._keep_activations)
        self._activations: torch.Tensor | None = None

    def _keep_activations(self, _m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._activations = output

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

    def _cam(self, activations: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        """CAM of class-activation-layer outputs ``[N, K, h, w]`` for the chosen classes, ``[N, h, w]``."""
        h, w = activations.shape[-2:]
        with torch.inference_mode():  # the activations may be inference tensors of the served pass
            return class_activation(activations, self.weight[chosen] / (h * w))

    def _own_pass(self, x: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        """Raw maps from this explainer's fp32 network (CAM, or Grad-CAM with one backward)."""
        assert self.net is not None
        x = x.contiguous(memory_format=torch.channels_last)
        try:
            if self.spec.method == "cam":
                with torch.inference_mode():
                    self.net(x)
                    assert self._activations is not None, "the class-activation layer did not run"
                    return self._cam(self._activations, chosen)
            with torch.enable_grad():
                logits = self.net(x)
                activations = self._activations
                assert activations is not None, "the class-activation layer did not run"
                picked = logits.gather(1, torch.tensor(chosen)[:, None]).sum()
                (grads,) = torch.autograd.grad(picked, activations)
            return class_activation(activations.detach(), grads.mean(dim=(2, 3)))
        finally:
            self._activations = None

    def explain(self, pixels: torch.Tensor, targets: list[str | int | None] | None = None) -> Explained:
        """``uint8 [N, 1, S, S]`` -> the served forward pass and one heatmap per image (``[N, S, S]``)."""
        wanted: list[str | int | None] = list(targets) if targets is not None else [None] * len(pixels)
        for target in wanted:  # fail before any work on a bad target
            self.target_index(target, 0)
        # the served backend: the /predictions numbers (and, for CAM, the activations)
        forward = self.engine.forward(pixels, cam=self.served)
        predicted = forward.logits.argmax(dim=1).tolist()
        chosen = [self.target_index(t, p) for t, p in zip(wanted, predicted, strict=True)]
        if self.served:
            assert forward.cam is not None, "the served backend returned no class-activation output"
            raw = self._cam(forward.cam, chosen)
        else:
            raw = self._own_pass(self.engine.normalise(pixels), chosen)
        maps, peaks = to_grid(raw, int(pixels.shape[-1]))
        return Explained(forward=forward, maps=maps, peaks=peaks, targets=chosen)

    def answers(
        self, pixels: torch.Tensor, targets: list[str | int | None] | None = None
    ) -> list[dict[str, Any]]:
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
                "method": self.spec.method,
                "layer": self.spec.layer,
                "backend": self.backend_name,
                "target": self.engine.class_names[target],
                "target_index": target,
                "shape": [size, size],
                "encoding": "png-base64",
                "heatmap": encode_png(heatmap),
                "peak": float(peak),
            }
        return blocks
