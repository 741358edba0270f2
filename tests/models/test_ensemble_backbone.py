"""The ensemble as one network: the mean of its members' calibrated probabilities, and its taps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lightning_app.errors import ConfigError
from lightning_app.inference.cascade import combine
from lightning_app.inference.explain import class_weights
from lightning_app.inference.tapped import Tapped
from lightning_app.inference.taps import cam_spec, fine_layer, stage_layers
from lightning_app.models.backbones import build_backbone, final_linear
from lightning_app.models.classifier import Classifier
from lightning_app.models.ensemble import Ensemble, resnet_head
from lightning_app.models.ensemble_names import ensemble_name, family
from lightning_app.models.ensemble_names import members as names


def members(count: int, num_classes: int = 2) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_backbone("resnet18", num_classes=num_classes).eval() for _ in range(count)]


@torch.no_grad()
def test_its_softmax_is_the_mean_of_the_members_temperature_scaled_probabilities() -> None:
    nets, temperatures = members(3, num_classes=4), [1.7, 0.6, 1.1]
    x = torch.randn(5, 1, 48, 48)
    expected = torch.stack([(n(x) / t).softmax(1) for n, t in zip(nets, temperatures, strict=True)]).mean(0)
    ensemble = Ensemble.assemble(nets, temperatures).eval()
    torch.testing.assert_close(ensemble(x).softmax(1), expected, atol=1e-6, rtol=0)
    # what export and serving do: an empty one built by name, the assembled state loaded into it
    rebuilt = build_backbone("resnet18x3", num_classes=4).eval()
    rebuilt.load_state_dict(ensemble.state_dict())
    torch.testing.assert_close(rebuilt(x), ensemble(x))


@torch.no_grad()
def test_its_cam_is_the_mean_of_the_members_cams_and_its_taps_keep_the_members_names() -> None:
    nets, temperatures = members(2), [2.0, 0.5]
    x = torch.randn(3, 1, 64, 64)
    own = []
    for net, t in zip(copy.deepcopy(nets), temperatures, strict=True):
        _, _, cam, *_ = Tapped.for_backbone(net, "resnet18")(x)
        own.append(np.einsum("ck,nkhw->nchw", resnet_head(net).weight.numpy() / t, cam.numpy()))
    tapped = Tapped.for_backbone(Ensemble.assemble(nets, temperatures).eval(), "resnet18x2")
    outputs = dict(zip(tapped.output_names, tapped(x), strict=True))
    weight = class_weights(final_linear(tapped.net).weight.numpy(), num_classes=2)
    got = np.einsum("ck,nkhw->nchw", weight, outputs["cam"].numpy())
    np.testing.assert_allclose(got, np.mean(own, axis=0), atol=1e-4)
    assert outputs["features"].shape == (3, 2 * 512)  # every member's penultimate features
    assert [n for n in tapped.output_names if n.startswith("stage_")] == [
        f"stage_members.0.layer{i}" for i in range(1, 5)
    ]  # the stage statistics: the first member's (a 2x wider covariance buys little)
    assert cam_spec("resnet18x2").layer == "layer4" and fine_layer("resnet18x2", "layer-cam") == "layer3"
    assert stage_layers("resnet18") == ("layer1", "layer2", "layer3", "layer4")


@torch.no_grad()
def test_its_leader_is_the_first_member_calibrated_with_the_ensembles_outputs_but_its_own_features() -> None:
    nets, temperatures = members(3), [1.5, 1.0, 2.0]
    x = torch.randn(4, 1, 64, 64)
    first = (copy.deepcopy(nets[0])(x) / 1.5).log_softmax(1)
    ensemble = Ensemble.assemble(nets, temperatures).eval()
    leader = ensemble.leader()
    torch.testing.assert_close(leader(x), first, atol=1e-5, rtol=0)
    whole = Tapped.for_backbone(ensemble, "resnet18x3")
    alone = Tapped.for_backbone(leader, "resnet18x3")  # the names the export gives its graph
    assert alone.output_names == whole.output_names
    got = dict(zip(alone.output_names, alone(x), strict=True))
    want = dict(zip(whole.output_names, whole(x), strict=True))
    assert got["features"].shape == (4, 512)  # the first member's penultimate features only
    for stage in (n for n in whole.output_names if n.startswith("stage_")):
        torch.testing.assert_close(got[stage], want[stage])  # the OOD guard reads the same statistics
    assert len(ensemble.members) == 3 and ensemble.fc.out_features == 6  # the ensemble is untouched


@torch.no_grad()
def test_its_first_member_and_its_followers_rebuild_the_whole_ensemble_outputs_and_map() -> None:
    ensemble = Ensemble.assemble(members(3), [1.5, 1.0, 2.0]).eval()
    x = torch.randn(4, 1, 64, 64)
    parts = [Tapped.for_backbone(part, "resnet18x3") for part in (ensemble.leader(), ensemble.followers())]
    whole = Tapped.for_backbone(ensemble, "resnet18x3")
    first, rest = (dict(zip(part.output_names, part(x), strict=True)) for part in parts)
    want = dict(zip(whole.output_names, whole(x), strict=True))
    combined = combine(first["logits"].numpy(), rest["logits"].numpy(), members=3)  # as the cascade serves
    np.testing.assert_allclose(combined, want["logits"].numpy(), atol=1e-5)
    torch.testing.assert_close(torch.cat([first["cam"], rest["cam"]], 1), want["cam"])  # members side by side
    assert len(ensemble.followers().members) == 2 and ensemble.followers().fc.out_features == 4
    with pytest.raises(ConfigError, match="members 3:None of an ensemble of 3 are none"):
        ensemble.part(3)


@torch.no_grad()
def test_members_of_different_widths_average_split_and_explain_as_one_ensemble() -> None:
    """A three-quarter-width first member before two full ones: what a cheaper cascade serves."""
    torch.manual_seed(0)
    widths = ["resnet18_w48", "resnet18", "resnet18"]
    nets, temperatures = [build_backbone(n, num_classes=2).eval() for n in widths], [1.2, 0.8, 1.5]
    x = torch.randn(3, 1, 64, 64)
    alone = [(n(x) / t).softmax(1) for n, t in zip(nets, temperatures, strict=True)]
    own = []
    for net, t in zip(copy.deepcopy(nets), temperatures, strict=True):
        _, _, cam, *_ = Tapped.for_backbone(net, "resnet18")(x)
        own.append(np.einsum("ck,nkhw->nchw", resnet_head(net).weight.numpy() / t, cam.numpy()))
    ensemble = Ensemble.assemble(nets, temperatures).eval()
    assert ensemble_name(widths) == "resnet18_w48+resnet18x2" and ensemble.fc.in_features == 384 + 2 * 512
    torch.testing.assert_close(ensemble(x).softmax(1), torch.stack(alone).mean(0), atol=1e-6, rtol=0)
    rebuilt = build_backbone("resnet18_w48+resnet18x2", num_classes=2).eval()
    rebuilt.load_state_dict(ensemble.state_dict())
    torch.testing.assert_close(rebuilt(x), ensemble(x))
    tapped = Tapped.for_backbone(ensemble, "resnet18_w48+resnet18x2")
    whole = dict(zip(tapped.output_names, tapped(x), strict=True))
    weight = class_weights(final_linear(ensemble).weight.numpy(), num_classes=2)
    got = np.einsum("ck,nkhw->nchw", weight, whole["cam"].numpy())
    np.testing.assert_allclose(got, np.mean(own, axis=0), atol=1e-4)  # the mean of the members' maps
    leader, followers = ensemble.leader(), ensemble.followers()
    torch.testing.assert_close(leader(x).softmax(1), alone[0], atol=1e-6, rtol=0)
    combined = combine(leader(x).numpy(), followers(x).numpy(), members=3)  # as the cascade serves
    np.testing.assert_allclose(combined, ensemble(x).numpy(), atol=1e-5)
    assert (leader.fc.in_features, followers.fc.in_features) == (384, 1024)


def test_names_and_refusals() -> None:
    assert names("resnet18x3") == ("resnet18",) * 3 and family("resnet18_os16x2") == "resnet18_os16"
    assert names("resnet18_w48+resnet18x2") == ("resnet18_w48", "resnet18", "resnet18")
    assert family("resnet18_w48+resnet18x2") == "resnet18" and ensemble_name(["resnet18"] * 3) == "resnet18x3"
    assert names("resnext50_32x4d") is None and names("resnet18x1") is None and names("resnet18") is None
    assert names("resnet18+") is None and family("resnet18") == "resnet18"
    with pytest.raises(ConfigError, match="torchvision ResNets"):
        build_backbone("small_cnnx2", num_classes=2)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        build_backbone("resnet18x2", num_classes=2, weights="DEFAULT")
    with pytest.raises(ConfigError, match="at least two"):
        Ensemble(members(1), num_classes=2)
    model = Classifier(backbone="resnet18x2")
    with pytest.raises(ConfigError, match="assembled ensemble"):
        model.configure_optimizers()
