"""Heatmaps that need a second, fp32 PyTorch pass: Grad-CAM, CAM of old models, finer methods.

ONNX Runtime has no backward pass, so Grad-CAM (heads where CAM is not Grad-CAM: MobileNet-V3)
runs on a fp32 copy of the exported weights, and so does CAM for an artefact exported before
the graphs had a ``cam`` output (format version 2). :class:`TorchPass` is that copy. The
methods finer than a backbone's CAM (:data:`~lightning_app.inference.taps.FINE_METHODS`,
chosen by ``SERVE_HEATMAP``) back-propagate too: :class:`FinePass` (the eager backend's own
network when it serves, else such a copy). This module needs torch:
:class:`~lightning_app.inference.explain.Explainer` imports it only then.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_app.inference.taps import INPUT_LAYER, CamSpec


class TorchPass:
    """A fp32 network giving the class-activation layer's output and its channel weights per image."""

    def __init__(self, net: nn.Module, spec: CamSpec, weight: np.ndarray) -> None:
        self.spec = spec
        self.weight = weight
        self.net = net.eval().to(memory_format=torch.channels_last)
        modules = dict(self.net.named_modules())
        if spec.layer not in modules:
            raise ValueError(f"{type(self.net).__name__} has no module {spec.layer!r}")
        modules[spec.layer].register_forward_hook(self._keep_activations)
        self._activations: torch.Tensor | None = None

    def _keep_activations(self, _m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._activations = output

    def activations(self, x: Any, chosen: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(A [N, K, h, w], weights [N, K])`` of normalised images ``x`` for the chosen classes.

        CAM: the final layer's weights over ``h * w``; Grad-CAM: the spatially averaged
        gradients of each chosen logit (one backward pass).
        """
        tensor = torch.as_tensor(np.asarray(x, dtype=np.float32)).contiguous(
            memory_format=torch.channels_last
        )
        try:
            if self.spec.method == "cam":
                with torch.inference_mode():
                    self.net(tensor)
                    assert self._activations is not None, "the class-activation layer did not run"
                    activations = self._activations.numpy()
                h, w = activations.shape[-2:]
                return activations, self.weight[chosen] / (h * w)
            with torch.enable_grad():
                logits = self.net(tensor)
                acts = self._activations
                assert acts is not None, "the class-activation layer did not run"
                picked = logits.gather(1, torch.tensor(chosen)[:, None]).sum()
                (grads,) = torch.autograd.grad(picked, acts)
            return acts.detach().numpy(), grads.mean(dim=(2, 3)).numpy()
        finally:
            self._activations = None


class FinePass:
    """LayerCAM on a finer layer, or gradient x input: one forward and one backward pass, fp32.

    * ``layer-cam`` (Jiang et al. 2021): ``ReLU(sum_k ReLU(dy_c/dA_k) * A_k)`` at every cell of
      ``layer``'s output ``A``: each cell weighs the channels by its OWN positive gradients, so
      the map keeps the layer's resolution (Grad-CAM's spatial average blurs a finer layer).
    * ``gradient-input`` (Shrikumar et al. 2016): ``ReLU(sum_channels dy_c/dx * (x - x0))`` on
      the pixels, ``x0`` the normalised black image: the first-order share of the logit each
      pixel adds against a black scan (one step of integrated gradients). Black pixels add
      nothing by construction, whatever the weights; ``make bench-localise`` therefore also
      scores every method with randomised weights.
    """

    def __init__(self, net: nn.Module, method: str, layer: str) -> None:
        self.net, self.method, self.layer = net.eval(), method, layer
        if method == "gradient-input":
            self.module: nn.Module | None = None
        elif method == "layer-cam":
            modules = dict(net.named_modules())
            if layer not in modules:
                raise ValueError(f"{type(net).__name__} has no module {layer!r}")
            self.module = modules[layer]
        else:
            raise ValueError(f"unknown fine heatmap method {method!r}")

    def maps(self, x: Any, chosen: list[int], baseline: Any) -> np.ndarray:
        """Raw maps ``[N, h, w]`` of normalised images ``x`` for the chosen classes (``baseline``: ``x0``)."""
        tensor = torch.as_tensor(np.asarray(x, dtype=np.float32)).contiguous(
            memory_format=torch.channels_last
        )
        kept: list[torch.Tensor] = []
        handle = (
            self.module.register_forward_hook(lambda _m, _i, out: kept.append(out))
            if self.module is not None
            else None
        )
        try:
            with torch.enable_grad():
                if handle is None:
                    tensor.requires_grad_(True)
                logits = self.net(tensor)
                source = kept[-1] if kept else tensor
                picked = logits.gather(1, torch.tensor(chosen)[:, None]).sum()
                (grads,) = torch.autograd.grad(picked, source)
        finally:
            if handle is not None:
                handle.remove()
        if self.layer == INPUT_LAYER:
            delta = tensor.detach() - torch.as_tensor(np.asarray(baseline, dtype=np.float32))
            raw = (grads * delta).sum(dim=1)
        else:
            raw = (grads.clamp_min(0) * source.detach()).sum(dim=1)
        out: np.ndarray = raw.clamp_min(0).float().numpy()
        return out


def final_weight(net: nn.Module) -> np.ndarray:
    """The final linear layer's weight ``[C, K]``, fp32."""
    from lightning_app.models.backbones import final_linear

    out: np.ndarray = final_linear(net).weight.detach().float().numpy().copy()
    return out
