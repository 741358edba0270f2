"""The finer heatmap methods (``SERVE_HEATMAP``): LayerCAM and gradient x input on real scans.

In-process (no TorchServe): exported model directories (random weights, seed 0) and real
Br35H scans through THE preprocessing. Each method is checked against an independent
write-out of its formula, and through the serving core's settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_app.inference.eager import load_network
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer, choose_method, decode_png, to_grid
from lightning_app.inference.service import ModelService
from lightning_app.inference.settings import ServeSettings
from lightning_app.inference.taps import EAGER_DEFAULT
from tests.inference.model_dirs import write_model_dir
from tests.inference.test_explain import scans


def layer_cam_reference(net: torch.nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """LayerCAM written out: ReLU(sum_k ReLU(dy/dA_k) * A_k) at every cell of ``layer``'s output."""
    kept: dict[str, torch.Tensor] = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(
        lambda _m, _i, o: kept.__setitem__("a", o)
    )
    try:
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(net(x)[:, target].sum(), kept["a"])
    finally:
        handle.remove()
    return (grad.clamp_min(0) * kept["a"]).sum(dim=1).clamp_min(0).detach()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    """A ResNet-18 model directory at 128 px (the default's grid: CAM 4x4, layer3 8x8)."""
    return InferenceEngine(write_model_dir(tmp_path_factory.mktemp("resnet"), "resnet18", size=128))


def test_layer_cam_is_layer3_at_twice_the_cam_grid(resnet: InferenceEngine) -> None:
    pixels = scans(3, 128)
    explainer = Explainer(resnet, method="layer-cam")
    for target in (0, 1):
        got = explainer.explain(pixels, [target] * 3)
        x = torch.from_numpy(resnet.normalise(pixels))
        raw = layer_cam_reference(load_network(resnet.model_dir, resnet.meta), "layer3", x, target)
        expected, peaks = to_grid(raw, 128)
        assert got.cells == 8 == 2 * Explainer(resnet, method="cam").explain(pixels).cells
        assert np.allclose(got.maps, expected, atol=1e-4)
        assert np.allclose(got.peaks, peaks, rtol=1e-3, atol=1e-6)
        assert np.allclose(got.forward.logits, resnet.forward(pixels).logits, atol=1e-5)  # the served pass
    answer = explainer.answers(pixels[:1])[0]["explanation"]
    assert (answer["method"], answer["layer"], answer["backend"]) == ("layer-cam", "layer3", "fp32")
    assert decode_png(answer["heatmap"]).shape == (128, 128)


def test_layer_cam_at_another_layer_keeps_that_layers_grid(resnet: InferenceEngine) -> None:
    """``layer`` (bench-localise's layer study) moves LayerCAM, and only LayerCAM, to that layer."""
    pixels = scans(2, 128)
    x = torch.from_numpy(resnet.normalise(pixels))
    net = load_network(resnet.model_dir, resnet.meta)
    for layer, cells in (("layer1", 32), ("layer2", 16), ("layer4", 4)):
        explainer = Explainer(resnet, method="layer-cam", layer=layer)
        got = explainer.explain(pixels, [1, 1])
        assert (explainer.layer, got.cells) == (layer, cells)
        assert np.allclose(got.maps, to_grid(layer_cam_reference(net, layer, x, 1), 128)[0], atol=1e-4)
    assert Explainer(resnet, method="gradient-input", layer="layer2").layer == "input"
    with pytest.raises(ValueError, match="has no module 'layer9'"):
        Explainer(resnet, method="layer-cam", layer="layer9")


def test_gradient_input_is_per_pixel_and_blind_to_black(resnet: InferenceEngine) -> None:
    """Gradient x input against a black scan: the formula, and zero wherever the scan is black."""
    pixels = scans(2, 128)
    pixels[:, :, :16, :] = 0  # a black band: nothing there differs from the reference scan
    got = Explainer(resnet, method="gradient-input").explain(pixels, [1, 1])
    assert got.cells == 128
    x = torch.from_numpy(resnet.normalise(pixels)).requires_grad_(True)
    net = load_network(resnet.model_dir, resnet.meta)
    (grad,) = torch.autograd.grad(net(x)[:, 1].sum(), x)
    black = torch.from_numpy(resnet.normalise(np.zeros_like(pixels[:1])))
    raw = (grad * (x.detach() - black)).sum(dim=1).clamp_min(0)
    assert np.allclose(got.maps, to_grid(raw, 128)[0], atol=1e-4)
    assert float(np.abs(got.maps[:, :16, :]).max()) == 0.0 and float(got.maps.max()) == pytest.approx(1.0)


def test_auto_is_the_eager_default_and_cam_on_onnx() -> None:
    assert choose_method(None, eager=True) == choose_method("auto", eager=True) == EAGER_DEFAULT
    assert choose_method("auto", eager=False) == "cam"  # the served pass: no torch needed
    assert choose_method("layer-cam", eager=False) == "layer-cam"  # an unknown name: ServeSettings refuses it


def test_the_setting_chooses_what_explanations_answer(tmp_path: Path) -> None:
    """``SERVE_HEATMAP`` through the serving core: each answer names the method and layer that made it."""
    root = write_model_dir(tmp_path / "model", "resnet18", size=128)
    pixels = scans(2, 128)
    seen = {}
    for value in ("cam", "layer-cam", "gradient-input", "occlusion"):
        service = ModelService()
        service.load(root, ServeSettings.from_env({"SERVE_HEATMAP": value}))
        _, answers = service.explain(pixels, [None, "tumor"])
        seen[value] = {(a["explanation"]["method"], a["explanation"]["layer"]) for a in answers}
        assert [a["explanation"]["target"] for a in answers][1] == "tumor"
    assert seen == {
        "cam": {("cam", "layer4")},
        "layer-cam": {("layer-cam", "layer3")},
        "gradient-input": {("gradient-input", "input")},
        "occlusion": {("occlusion", "input")},
    }
