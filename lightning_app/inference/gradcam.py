"""Heatmaps that need a second, fp32 PyTorch pass: Grad-CAM, and CAM of old or eager models.

ONNX Runtime has no backward pass, so Grad-CAM (heads where CAM is not Grad-CAM: MobileNet-V3)
runs on a fp32 copy of the exported weights, and so does CAM for an artefact exported before
the graphs had a ``cam`` output (format version 2). :class:`TorchPass` is that copy. It needs
torch: :class:`~lightning_app.inference.explain.Explainer` imports this module only then.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_app.inference.taps import CamSpec


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


def final_weight(net: nn.Module) -> np.ndarray:
    """The final linear layer's weight ``[C, K]``, fp32."""
    from lightning_app.models.backbones import final_linear

    out: np.ndarray = final_linear(net).weight.detach().float().numpy().copy()
    return out
