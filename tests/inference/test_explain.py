"""Heatmaps: the CAM maths by hand, CAM = Grad-CAM, and the sanity checks on real scans.

In-process (no TorchServe): exported model directories and real Br35H scans; the trained
model of the session (``trained_checkpoint``) for the model-randomisation check.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_app.data.sources import embedded_br35h
from lightning_app.inference.eager import load_network
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import (
    CAM_LAYERS,
    Explainer,
    class_activation,
    decode_png,
    encode_png,
    head_weight,
    to_grid,
    upsample,
)
from lightning_app.models.backbones import TORCHVISION, build_backbone, final_linear
from tests.inference.model_dirs import write_model_dir


def scans(n: int, size: int, folder: str = "yes") -> np.ndarray:
    """``uint8 [n, 1, size, size]`` real Br35H scans through THE preprocessing."""
    from lightning_app.transforms import load

    files = sorted((embedded_br35h() / folder).glob("*.jpg"))[-n:]
    return np.stack([load(f.read_bytes(), image_size=size) for f in files])


def test_class_activation_by_hand() -> None:
    # 2 channels on a 2x2 grid, class weights (1, -2): CAM = ReLU(1*A0 - 2*A1)
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [2.0, 0.5]]]])
    cam = class_activation(a, torch.tensor([[1.0, -2.0]]))
    assert cam.tolist() == [[[1.0, 0.0], [0.0, 3.0]]]
    maps, peaks = to_grid(cam, 4)
    assert peaks.tolist() == [3.0]
    assert maps.shape == (1, 4, 4)
    assert float(maps.max()) == pytest.approx(1.0)
    assert float(maps[0, 3, 3]) == pytest.approx(1.0)  # the corner nearest the hot cell
    assert float(maps[0, 0, 3]) == 0.0  # the corner nearest a zero cell
    zero, zero_peak = to_grid(torch.zeros(1, 2, 2), 4)
    assert zero_peak.tolist() == [0.0] and float(np.abs(zero).sum()) == 0.0


def test_numpy_upsampling_is_torch_bilinear() -> None:
    """The torch-free heatmap grid matches ``F.interpolate(bilinear, align_corners=False)``."""
    import torch.nn.functional as F

    raw = np.random.default_rng(0).random((2, 4, 5)).astype(np.float32)
    for size in (8, 13, 64):
        expected = F.interpolate(torch.from_numpy(raw)[:, None], size=(size, size), mode="bilinear")[:, 0]
        assert np.allclose(upsample(raw, size), expected.numpy(), atol=1e-6)


def test_the_head_weight_read_without_torch_is_the_final_linear(tmp_path: Path) -> None:
    """``head_weight`` (torch-free, from ``state_dict.pt``) is the network's final linear layer."""
    for backbone in ("small_cnn", "resnet18", "mobilenet_v3_small"):
        root = write_model_dir(tmp_path / backbone, backbone)
        net = load_network(root, InferenceEngine(root).meta)
        assert np.array_equal(head_weight(root), final_linear(net).weight.detach().numpy())


def test_png_round_trip_is_8_bit_and_exact() -> None:
    heatmap = torch.linspace(0, 1, 64 * 64).reshape(64, 64)
    back = decode_png(encode_png(heatmap))
    assert back.shape == (64, 64) and back.dtype == np.uint8
    assert np.abs(back.astype(float) / 255 - heatmap.numpy()).max() <= 0.5 / 255 + 1e-6


def test_every_offered_backbone_has_a_cam_layer() -> None:
    assert set(TORCHVISION) | {"small_cnn"} <= set(CAM_LAYERS)
    for name in ("small_cnn", "resnet18", "mobilenet_v3_small"):
        net = build_backbone(name, num_classes=2)
        assert CAM_LAYERS[name].layer in dict(net.named_modules())


def grad_cam_reference(net: torch.nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM written out independently: hook, backward, channel means of the gradients."""
    kept: dict[str, torch.Tensor] = {}
    module = dict(net.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: kept.__setitem__("a", out))
    try:
        with torch.enable_grad():
            logits = net(x)
            (grad,) = torch.autograd.grad(logits[:, target].sum(), kept["a"])
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return (weights * kept["a"]).sum(dim=1).clamp_min(0).detach()


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18", "mobilenet_v3_small"])
def test_heatmap_equals_grad_cam(tmp_path: Path, backbone: str) -> None:
    """CAM heads (one forward pass) and Grad-CAM heads (a backward pass) agree with Grad-CAM."""
    engine = InferenceEngine(write_model_dir(tmp_path, backbone))
    explainer = Explainer(engine)
    pixels = scans(3, 64)
    for target in (0, 1):
        result = explainer.explain(pixels, [target] * 3)
        reference_net = load_network(engine.model_dir, engine.meta)
        x = torch.from_numpy(engine.normalise(pixels))
        raw = grad_cam_reference(reference_net, CAM_LAYERS[backbone].layer, x, target)
        expected, peaks = to_grid(raw, 64)
        assert np.allclose(result.maps, expected, atol=1e-4)
        assert np.allclose(result.peaks, peaks, rtol=1e-3, atol=1e-6)
        # the same forward pass gives the logits /predictions would give
        assert np.allclose(result.forward.logits, engine.forward(pixels).logits, atol=1e-4)


def test_heatmap_is_on_the_input_grid_finite_and_deterministic(tmp_path: Path) -> None:
    engine = InferenceEngine(write_model_dir(tmp_path, "small_cnn", size=96))
    explainer = Explainer(engine)
    pixels = scans(4, 96)
    first = explainer.explain(pixels)
    second = explainer.explain(pixels)
    assert first.maps.shape == (4, 96, 96)
    assert np.isfinite(first.maps).all() and first.maps.min() >= 0 and first.maps.max() <= 1
    assert np.array_equal(first.maps, second.maps)
    assert first.targets == engine.forward(pixels).logits.argmax(axis=1).tolist()


def test_the_two_classes_get_different_maps(tmp_path: Path) -> None:
    explainer = Explainer(InferenceEngine(write_model_dir(tmp_path)))
    pixels = scans(4, 64)
    maps = [explainer.explain(pixels, [t] * 4).maps for t in (0, 1)]
    assert np.abs(maps[0] - maps[1]).max(axis=(1, 2)).min() > 0.1


def test_targets_by_name_or_index_and_unknown_ones_fail(tmp_path: Path) -> None:
    explainer = Explainer(InferenceEngine(write_model_dir(tmp_path)))
    assert explainer.target_index("tumor", 0) == 1
    assert explainer.target_index("0", 1) == 0
    assert explainer.target_index(None, 1) == 1
    for bad in ("glioma", "2", "-1", "tumour"):
        with pytest.raises(ValueError, match="no_tumor, tumor"):
            explainer.target_index(bad, 0)
    pixels = scans(2, 64)
    answers = explainer.answers(pixels, ["tumor", 0])
    assert [a["explanation"]["target"] for a in answers] == ["tumor", "no_tumor"]
    assert answers[0]["explanation"]["shape"] == [64, 64]
    assert decode_png(answers[0]["explanation"]["heatmap"]).shape == (64, 64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = a.flatten().argsort(kind="stable").argsort().astype(np.float64)
    rb = b.flatten().argsort(kind="stable").argsort().astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def test_randomising_the_weights_changes_the_map(trained_checkpoint: Path, tmp_path: Path) -> None:
    """Adebayo et al.'s model-randomisation check on the session's trained model and real scans."""
    from lightning_app.export.build import export

    exported = export(trained_checkpoint, tmp_path / "model", steps=[])
    engine = InferenceEngine(exported.meta.parent)
    pixels = scans(8, int(exported.metadata["preprocessing"]["image_size"]))
    trained = Explainer(engine).explain(pixels).maps
    randomised_net = copy.deepcopy(engine.backend.net)  # type: ignore[attr-defined]
    torch.manual_seed(1)
    for module in randomised_net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]
    random = Explainer(engine, net=randomised_net).explain(pixels).maps
    similarity = [abs(spearman(a, b)) for a, b in zip(trained, random, strict=True)]
    assert float(np.mean(similarity)) < 0.5, similarity


def held_out_scans(root: Path, size: int) -> torch.Tensor:
    from lightning_app.data.pixels import split_pixels

    pixels, _ = split_pixels(root, "test", image_size=size)
    return pixels


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.flatten().astype(np.float64), b.flatten().astype(np.float64))[0, 1])


@pytest.mark.slow
def test_int8_cam_comes_from_the_served_pass_and_matches_fp32(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path
) -> None:
    """The int8 artefact's own ``cam`` output makes the heatmap; it agrees with fp32 CAM on real scans."""
    from lightning_app.export.build import export

    exported = export(trained_checkpoint, tmp_path / "model", data_dir=small_br35h)
    assert exported.metadata["backend"]["precision"] == "int8"
    engine = InferenceEngine(tmp_path / "model")
    served = Explainer(engine)
    assert served.served and served.second is None  # no fp32 network kept for CAM
    fp32 = Explainer(engine, net=load_network(engine.model_dir, engine.meta))  # a fp32 second pass
    assert not fp32.served
    pixels = held_out_scans(small_br35h, int(exported.metadata["preprocessing"]["image_size"]))
    assert len(pixels) >= 20
    for target in (None, 0, 1):
        got = served.explain(pixels, [target] * len(pixels))
        ref = fp32.explain(pixels, [target] * len(pixels))
        assert got.targets == ref.targets  # int8 and the served pass agree on the class explained
        # the served pass is exactly what /predictions computes
        assert np.array_equal(got.forward.logits, engine.forward(pixels).logits)
        live = [i for i in range(len(pixels)) if ref.peaks[i] > 0 and got.peaks[i] > 0]
        assert len(live) >= len(pixels) // 2
        correlations = [pearson(got.maps[i], ref.maps[i]) for i in live]
        hottest = [int(got.maps[i].argmax()) == int(ref.maps[i].argmax()) for i in live]
        assert float(np.median(correlations)) > 0.95, correlations
        assert float(np.mean(hottest)) >= 0.8, hottest
    answer = served.answers(pixels[:2])[0]
    assert answer["explanation"]["backend"] == "int8" and answer["explanation"]["method"] == "cam"
    # predictions do not fetch the class-activation output; explanations do
    x = engine.normalise(pixels[:3])
    assert engine.backend(x).cam is None
    cam = engine.backend(x, cam=True).cam
    assert cam is not None and cam.shape[0] == 3 and cam.ndim == 4


@pytest.mark.slow
def test_an_onnx_graph_without_cam_output_falls_back_to_fp32(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path
) -> None:
    """An artefact of format version 2 (graph outputs ``logits`` and ``features`` only) still explains."""
    from lightning_app.export.build import export
    from lightning_app.inference import artefacts
    from lightning_app.inference.backends import export_onnx

    exported = export(trained_checkpoint, tmp_path / "model", data_dir=small_br35h)
    engine = InferenceEngine(tmp_path / "model")
    size = int(exported.metadata["preprocessing"]["image_size"])
    net = load_network(engine.model_dir, engine.meta)
    export_onnx(net, tmp_path / "model" / artefacts.ONNX_INT8, in_channels=1, image_size=size)  # v2 outputs
    with pytest.raises(ValueError, match="does not output"):  # v3 OOD statistics need the stage outputs
        InferenceEngine(tmp_path / "model")
    (tmp_path / "model" / artefacts.OOD_STATS).unlink()
    old = InferenceEngine(tmp_path / "model")
    assert not old.backend.has_cam
    explainer = Explainer(old)
    assert not explainer.served
    pixels = held_out_scans(small_br35h, size)[:4]
    answer = explainer.answers(pixels)[0]
    assert answer["explanation"]["backend"] == "fp32"
    reference = Explainer(old, net=load_network(old.model_dir, old.meta)).explain(pixels)
    assert np.allclose(explainer.explain(pixels).maps, reference.maps, atol=1e-5)
