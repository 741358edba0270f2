"""Occlusion heatmaps (``SERVE_HEATMAP=occlusion``): forward passes only, on the served backend.

A hand-made forward function whose evidence sits in one known patch, then an exported
ResNet-18 (random weights, seed 0) on real Br35H scans against an independent write-out of
the method, and the setting through the serving core.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_app.inference.eager import load_network
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer, to_grid
from lightning_app.inference.occlusion import log_odds, occlusion_maps
from tests.inference.model_dirs import write_model_dir
from tests.inference.test_explain import scans


def evidence_at(rows: slice, cols: slice):  # type: ignore[no-untyped-def]
    """A "network" whose tumour logit is the mean brightness of one region, the other logit 0."""

    def logits_of(pixels: np.ndarray) -> np.ndarray:
        tumour = pixels[:, 0, rows, cols].astype(np.float64).mean(axis=(1, 2)) / 32
        return np.stack([np.zeros_like(tumour), tumour], axis=1)

    return logits_of


def test_the_map_lights_the_patch_that_holds_the_evidence() -> None:
    image = np.full((1, 1, 128, 128), 200, dtype=np.uint8)
    logits_of = evidence_at(slice(36, 44), slice(84, 92))  # inside cell (row 2, column 5) of 8x8
    raw = occlusion_maps(logits_of, image, [1])[0]
    assert raw.shape == (8, 8)
    assert np.unravel_index(raw.argmax(), raw.shape) == (2, 5)
    assert raw[2, 5] == pytest.approx(200 / 32)  # blacking it out drops the log-odds to 0
    assert np.count_nonzero(raw) == 1  # no other patch changes the answer
    # for the other class the same occlusion RAISES its odds: no evidence for it anywhere
    assert not occlusion_maps(logits_of, image, [0]).any()


def test_log_odds_are_the_same_from_logits_and_from_log_probabilities() -> None:
    """An ensemble's graph gives log-probabilities; the map must not depend on which."""
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    chosen = np.array([0, 2])
    assert np.allclose(log_odds(logits, chosen), log_odds(log_probs, chosen))
    assert log_odds(logits[:, :2], np.array([0, 1])) == pytest.approx(
        [3.0, 3.0]
    )  # two classes: z_c - z_other


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    return InferenceEngine(write_model_dir(tmp_path_factory.mktemp("resnet"), "resnet18", size=128))


def reference(net: torch.nn.Module, engine: InferenceEngine, pixels: np.ndarray, target: int) -> np.ndarray:
    """Occlusion written out: black out each 16 px square in turn, one image at a time."""

    def odds(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            z = net(torch.from_numpy(engine.normalise(batch))).double()
        return (z[:, target] - z[:, 1 - target]).numpy()

    out = np.zeros((len(pixels), 8, 8))
    for n, image in enumerate(pixels):
        for row in range(8):
            for col in range(8):
                copy = image.copy()
                copy[:, row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = 0
                out[n, row, col] = max(odds(image[None])[0] - odds(copy[None])[0], 0.0)
    return out


def test_occlusion_on_an_exported_resnet_matches_the_write_out(resnet: InferenceEngine) -> None:
    pixels = scans(2, 128)
    explainer = Explainer(resnet, method="occlusion")
    got = explainer.explain(pixels, [1, 1])
    net = load_network(resnet.model_dir, resnet.meta).eval()
    expected, peaks = to_grid(reference(net, resnet, pixels, 1), 128)
    assert got.cells == 8
    assert np.allclose(got.maps, expected, atol=1e-3)
    assert np.allclose(got.peaks, peaks, rtol=1e-3, atol=1e-5)
    answer = explainer.answers(pixels[:1])[0]["explanation"]
    assert (answer["method"], answer["layer"], answer["backend"]) == (
        "occlusion",
        "input",
        resnet.backend.name,
    )


def test_a_given_network_replaces_the_served_one(resnet: InferenceEngine) -> None:
    """The benchmark's randomised-weights control runs the occlusions through ITS network."""
    pixels = scans(2, 128)
    other = load_network(resnet.model_dir, resnet.meta)
    torch.manual_seed(3)
    for module in other.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]
    explainer = Explainer(resnet, net=other, method="occlusion")
    got = explainer.explain(pixels, [1, 1])
    assert explainer.backend_name == "fp32"
    assert np.allclose(got.maps, to_grid(reference(other.eval(), resnet, pixels, 1), 128)[0], atol=1e-3)
    assert not np.allclose(got.maps, Explainer(resnet, method="occlusion").explain(pixels, [1, 1]).maps)
