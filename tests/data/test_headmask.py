"""The head mask and the background swap on real Br35H scans and on images with no head."""

from __future__ import annotations

import numpy as np
import torch

from lightning_app.data.augment import BackgroundSwap, TrainPreset
from lightning_app.data.headmask import head_mask
from lightning_app.data.sources import embedded_br35h
from lightning_app.transforms import load


def scans(n: int = 6) -> list[torch.Tensor]:
    root = embedded_br35h()
    paths = sorted(root.glob("yes/*.jpg"))[:n] + sorted(root.glob("no/*.jpg"))[:n]
    return [torch.from_numpy(load(p, image_size=96)) for p in paths]


def test_the_mask_holds_the_head_and_leaves_the_corners_out() -> None:
    for pixels in scans():
        image = pixels[0].numpy()
        mask = head_mask(image)
        assert 0.25 < mask.mean() < 0.95
        assert not mask[0, 0] and not mask[-1, -1]  # the corners are background
        assert image[mask].mean() > 2 * image[~mask].mean()  # the bright part is inside
        eroded, dilated = head_mask(image, erode=3), head_mask(image, dilate=2)
        assert eroded.sum() < mask.sum() < dilated.sum()
        assert not (eroded & ~mask).any() and not (mask & ~dilated).any()


def test_an_image_without_a_head_has_an_empty_mask() -> None:
    for value in (0, 128, 255):
        assert not head_mask(np.full((64, 64), value, dtype=np.uint8)).any()


def test_the_swap_keeps_the_head_and_randomises_the_rest() -> None:
    torch.manual_seed(0)
    swap = BackgroundSwap(1.0)
    for pixels in scans(3):
        before = pixels.clone()
        head = torch.from_numpy(head_mask(pixels[0].numpy(), dilate=2))[None]
        outs = [swap(pixels) for _ in range(4)]
        assert torch.equal(pixels, before)  # the cached image is not touched
        for out in outs:
            assert out.dtype == torch.uint8 and out.shape == pixels.shape
            assert torch.equal(out[head], pixels[head])
            assert (out[~head] != pixels[~head]).float().mean() > 0.5
        assert len({float(o[~head].float().mean()) for o in outs}) == 4  # a new fill each time


def test_black_swap_zeroes_exactly_the_outside() -> None:
    pixels = scans(1)[0]
    head = torch.from_numpy(head_mask(pixels[0].numpy(), dilate=2))[None]
    out = BackgroundSwap(1.0, level=0.0, noise=0.0)(pixels)
    assert torch.equal(out[head], pixels[head]) and not out[~head].any()


def test_the_swap_leaves_headless_images_and_p_zero_alone() -> None:
    swap = BackgroundSwap(1.0)
    for value in (0, 255):
        flat = torch.full((1, 32, 32), value, dtype=torch.uint8)
        assert torch.equal(swap(flat), flat)
    # the largest blob is not where most of the brightness is: not a head, left alone
    two = torch.zeros((1, 96, 96), dtype=torch.uint8)
    two[0, 10:50, 5:45], two[0, 60:90, 60:90] = 120, 255
    assert torch.equal(swap(two), two)
    pixels = scans(1)[0]
    assert torch.equal(BackgroundSwap(0.0)(pixels), pixels)


def test_the_train_preset_swaps_only_when_asked() -> None:
    pixels = scans(1)[0]
    plain = TrainPreset(mean=0.5, std=0.25, hflip_prob=0, degrees=0, translate=0, scale=(1.0, 1.0))
    swapped = TrainPreset(
        mean=0.5, std=0.25, hflip_prob=0, degrees=0, translate=0, scale=(1.0, 1.0), background=1.0
    )
    assert plain.swap is None
    assert torch.equal(plain(pixels), (pixels.float() / 255 - 0.5) / 0.25)
    assert not torch.equal(swapped(pixels), plain(pixels))
