"""The head crop of THE preprocessing, and the intensity jitter: real scans, hostile inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_app.data.augment import IntensityJitter, TrainPreset
from lightning_app.data.sources import embedded_br35h
from lightning_app.transforms import Preprocessing, crop_to_head, decode, head_box, load, preprocess


def scans(n: int = 12) -> list[Path]:
    root = embedded_br35h()
    return sorted(root.glob("yes/*.jpg"))[:n] + sorted(root.glob("no/*.jpg"))[:n]


def test_head_box_holds_the_head_and_drops_the_black_border() -> None:
    for path in scans():
        image = decode(path)
        box = head_box(image)
        assert box is not None, path
        left, top, right, bottom = box
        assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
        pixels = np.asarray(image, dtype=np.float64)
        inside = pixels[top:bottom, left:right].sum()
        assert inside >= 0.9 * pixels.sum(), path  # the head is inside (burnt-in labels may not be)


def test_a_head_in_a_wide_black_canvas_is_found_and_fills_the_square() -> None:
    head = decode(scans(1)[0]).resize((100, 120))
    canvas = Image.new("L", (400, 300), 0)
    canvas.paste(head, (250, 90))
    left, top, right, bottom = head_box(canvas) or (0, 0, 0, 0)
    assert (
        abs(left - 250) <= 16 and abs(right - 350) <= 16 and abs(top - 90) <= 16 and abs(bottom - 210) <= 16
    )
    cropped = crop_to_head(canvas)
    assert cropped.width == cropped.height <= 150  # padded to a square around the head only


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((300, 200), np.uint8),  # black
        np.full((300, 200), 255, np.uint8),  # white
        np.full((64, 64), 128, np.uint8),  # flat grey
        np.zeros((1, 1), np.uint8),  # one pixel
        np.full((1, 500), 200, np.uint8),  # a line
        np.pad(np.full((3, 3), 255, np.uint8), 100),  # a speck: too small to be a head
    ],
    ids=["black", "white", "grey", "1px", "line", "speck"],
)
def test_degenerate_images_fall_back_to_the_full_image(pixels: np.ndarray) -> None:
    image = Image.fromarray(pixels)
    assert head_box(image) is None
    assert crop_to_head(image) is image
    out = load(_png(image), image_size=32, head_crop=True)
    assert np.array_equal(out, load(_png(image), image_size=32))


def test_non_mri_images_still_give_a_defined_input() -> None:
    rng = np.random.default_rng(0)
    for pixels in (
        rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),  # noise photo
        np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)),  # gradient
    ):
        out = load(_png(Image.fromarray(pixels)), image_size=48, head_crop=True)
        assert out.shape == (1, 48, 48) and out.dtype == np.uint8


def test_preprocessing_dict_carries_the_crop_only_when_on_and_old_dicts_load() -> None:
    assert Preprocessing().as_dict() == {"image_size": 128, "mean": 0.5, "std": 0.25}  # old artefacts' form
    crop = Preprocessing(image_size=64, head_crop=True)
    assert Preprocessing(**crop.as_dict()) == crop
    old = Preprocessing(**{"image_size": 64, "mean": 0.5, "std": 0.25})
    assert old.head_crop is False
    path = scans(1)[0]
    assert np.array_equal(crop.load(path), load(path, image_size=64, head_crop=True))
    assert not np.array_equal(crop.load(path), old.load(path))
    assert preprocess(path.read_bytes(), crop).shape == (1, 64, 64)


def test_intensity_jitter_changes_values_in_range_and_zero_is_off() -> None:
    torch.manual_seed(0)
    pixels = torch.from_numpy(load(scans(1)[0], image_size=64))  # the DataModule's edge
    x = pixels.float() / 255
    outs = [IntensityJitter(1.0)(x) for _ in range(8)]
    assert all(o.shape == x.shape and float(o.min()) >= 0 and float(o.max()) <= 1 for o in outs)
    assert sum(not torch.allclose(o, x) for o in outs) >= 6
    plain = TrainPreset(mean=0.5, std=0.25, hflip_prob=1.0, degrees=0, translate=0, scale=(1.0, 1.0))
    assert plain.jitter is None
    assert torch.equal(plain(pixels), (x.flip(-1) - 0.5) / 0.25)
    jittered = TrainPreset(
        mean=0.5, std=0.25, hflip_prob=1.0, degrees=0, translate=0, scale=(1.0, 1.0), intensity=1.0
    )
    assert jittered(pixels).shape == (1, 64, 64)


def test_intensity_jitter_on_a_batch_draws_apart_for_every_image() -> None:
    """A batch of eight copies of one scan comes back as (nearly) eight different images."""
    torch.manual_seed(1)
    x = torch.from_numpy(load(scans(1)[0], image_size=64)).float() / 255
    out = IntensityJitter(1.0)(x.expand(8, 1, 64, 64))
    assert out.shape == (8, 1, 64, 64) and float(out.min()) >= 0 and float(out.max()) <= 1
    distinct = {tuple(row.flatten()[:256].tolist()) for row in out}
    assert len(distinct) >= 6


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
