"""Backbones: forward shapes for each architecture and channel count; stem adaptation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from lightning_app.models.backbones import SmallCNN, adapt_first_conv, build_backbone


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"])
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shape(name: str, channels: int) -> None:
    model = build_backbone(name, num_classes=4, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 64, 64))
    assert out.shape == (2, 4)


def test_grayscale_stem_keeps_pretrained_response() -> None:
    """Summing RGB filters: a gray image through the 1-channel stem == (g, g, g) through RGB."""
    rgb = torchvision.models.resnet18(weights=None).eval()
    gray = torchvision.models.resnet18(weights=None).eval()
    gray.load_state_dict(rgb.state_dict())
    adapt_first_conv(gray, 1)
    assert gray.conv1.in_channels == 1
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray(image), rgb(image.repeat(1, 3, 1, 1)), atol=1e-4)


def test_pretrained_head_is_replaced_for_our_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    # No weights can be downloaded here: serve torchvision's own random init in their place,
    # which exercises the same head-replacement and stem-adaptation path.
    real = torchvision.models.get_model
    monkeypatch.setattr(
        torchvision.models, "get_model", lambda name, weights=None, **kw: real(name, weights=None, **kw)
    )
    model = build_backbone("mobilenet_v3_small", num_classes=3, in_channels=1, weights="DEFAULT")
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_multi_channel_adaptation_and_no_conv_error() -> None:
    model = SmallCNN(num_classes=2, in_channels=3)
    adapt_first_conv(model, 4)
    assert model(torch.randn(1, 4, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="no Conv2d"):
        adapt_first_conv(nn.Sequential(nn.Linear(2, 2)), 1)


def test_unknown_backbone_and_weights_for_small_cnn_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet99'"):
        build_backbone("resnet99", num_classes=2)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("small_cnn", num_classes=2, weights="DEFAULT")


def test_output_stride_16_doubles_the_cam_grid_with_the_same_weights() -> None:
    from lightning_app.inference.tapped import Tapped

    torch.manual_seed(0)
    plain, fine = (build_backbone(n, num_classes=2) for n in ("resnet18", "resnet18_os16"))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in fine.state_dict().items()
    }  # a plain ResNet-18 checkpoint's shapes: only strides differ
    x = torch.rand(2, 1, 128, 128)
    cams = {}
    for name, net in (("resnet18", plain), ("resnet18_os16", fine)):
        tapped = Tapped.for_backbone(net.eval(), name)
        with torch.no_grad():
            outputs = dict(zip(tapped.output_names, tapped(x), strict=True))
        assert outputs["logits"].shape == (2, 2)
        cams[name] = outputs["cam"].shape[-2:]
    assert cams == {"resnet18": (4, 4), "resnet18_os16": (8, 8)}


def test_a_narrowed_resnet_is_its_base_at_a_quarter_of_the_cost_with_the_same_taps() -> None:
    from lightning_app.inference.tapped import Tapped
    from lightning_app.inference.taps import cam_spec, fine_layer, stage_layers

    torch.manual_seed(0)
    full, narrow = (build_backbone(n, num_classes=3) for n in ("resnet18", "resnet18_w32"))
    count = {n: sum(p.numel() for p in m.parameters()) for n, m in (("full", full), ("narrow", narrow))}
    assert 0.2 < count["narrow"] / count["full"] < 0.3
    stages = [narrow.get_submodule(f"layer{i}") for i in range(1, 5)]
    assert [s[-1].conv2.out_channels for s in stages] == [32, 64, 128, 256]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert len(build_backbone("resnet34_w16", num_classes=2).layer3) == 6  # depth kept, width cut
    tapped = Tapped.for_backbone(narrow.eval(), "resnet18_w32")
    with torch.no_grad():
        outputs = dict(zip(tapped.output_names, tapped(torch.rand(2, 1, 128, 128)), strict=True))
    assert outputs["logits"].shape == (2, 3) and outputs["cam"].shape == (2, 256, 4, 4)
    assert cam_spec("resnet18_w32x3").layer == "layer4"
    assert fine_layer("resnet18_w32", "layer-cam") == "layer3"
    assert stage_layers("resnet18_w32x3") == tuple(f"members.0.layer{i}" for i in range(1, 5))
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("resnet18_w32", num_classes=2, weights="DEFAULT")
    with pytest.raises(ValueError, match="unknown backbone 'resnet50_w32'"):
        build_backbone("resnet50_w32", num_classes=2)  # bottleneck ResNets are not narrowed


def test_a_mirror_stem_resnet_sees_only_asymmetry_in_its_second_channel_and_exports(tmp_path: Path) -> None:
    import onnxruntime as ort

    from lightning_app.inference.backends import export_onnx
    from lightning_app.inference.tapped import Tapped
    from lightning_app.models.backbones import MirrorStem

    torch.manual_seed(0)
    net = build_backbone("resnet18_mirror", num_classes=2).eval()
    assert isinstance(net.conv1, MirrorStem) and net.conv1.conv.in_channels == 2
    half = torch.rand(1, 1, 128, 64)
    symmetric, lopsided = torch.cat([half, half.flip(-1)], -1), torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        before = {n: net(x) for n, x in (("symmetric", symmetric), ("lopsided", lopsided))}
        net.conv1.conv.weight[:, 1] = 0  # blind the network to the mirror difference
        after = {n: net(x) for n, x in (("symmetric", symmetric), ("lopsided", lopsided))}
    assert torch.equal(before["symmetric"], after["symmetric"])  # no asymmetry: nothing in channel 2
    assert not torch.allclose(before["lopsided"], after["lopsided"])
    tapped = Tapped.for_backbone(net, "resnet18_mirror")  # the base network's taps (layer4 CAM)
    with torch.no_grad():
        outputs = dict(zip(tapped.output_names, tapped(lopsided), strict=True))
    assert outputs["cam"].shape == (1, 512, 4, 4)
    graph = export_onnx(net, tmp_path / "m.onnx", in_channels=1, image_size=128, backbone="resnet18_mirror")
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pixels": lopsided.numpy()})[0]
    assert np.allclose(logits, outputs["logits"].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="one grey channel"):
        build_backbone("resnet18_mirror", num_classes=2, in_channels=3)
