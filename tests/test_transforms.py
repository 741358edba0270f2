"""The one preprocessing definition: every input mode decodes to the same defined input."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_app.data.augment import TrainPreset
from lightning_app.data.sources import embedded_br35h
from lightning_app.transforms import (
    MAX_PIXELS,
    REDUCE_MARGIN,
    EvalPreset,
    ImageDecodeError,
    Preprocessing,
    decode,
    load,
    preprocess,
    resize,
)


@pytest.fixture(scope="module")
def scan() -> Image.Image:
    """A real tumour scan, as RGB."""
    return Image.open(embedded_br35h() / "yes" / "y0.jpg").convert("RGB")


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "LA"])
def test_every_mode_decodes_to_the_same_grayscale(scan: Image.Image, mode: str) -> None:
    reference = np.asarray(scan.convert("L"), dtype=np.int16)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = decode(encode(scan.convert(mode), fmt))
    assert image.mode == "L"
    assert image.size == scan.size
    tolerance = 12 if mode in ("P", "CMYK") else 1  # palette quantisation / JPEG
    assert np.abs(np.asarray(image, dtype=np.int16) - reference).mean() < tolerance


def test_16_bit_png_is_rescaled_to_full_8_bit_range(scan: Image.Image) -> None:
    gray16 = (np.asarray(scan.convert("L"), dtype=np.uint16) * 200).astype(np.uint16)
    data = encode(Image.fromarray(gray16))
    out = np.asarray(decode(data))
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_png_named_jpg_is_decoded_by_content(tmp_path: Path, scan: Image.Image) -> None:
    path = tmp_path / "scan.jpg"
    path.write_bytes(encode(scan, "PNG"))
    pixels = load(path, image_size=64)
    assert pixels.shape == (1, 64, 64) and pixels.dtype == np.uint8


def test_animated_gif_uses_first_frame(scan: Image.Image) -> None:
    frames = [scan.convert("L"), Image.new("L", scan.size, 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(decode(data)).mean() < 200  # the scan, not the white frame


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty input"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_bad_bytes_raise_readable_errors(payload: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode(payload)


def test_truncated_jpeg_is_rejected(scan: Image.Image) -> None:
    data = encode(scan, "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode(data[: len(data) // 2])


def test_decompression_bomb_is_rejected() -> None:
    bomb = encode(Image.new("L", (12_000, 12_000)))  # 144 Mpx of zeros: a tiny file
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageDecodeError, match="too large"):
        decode(bomb)


def test_unsupported_format_is_named() -> None:
    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="PPM")
    with pytest.raises(ImageDecodeError, match="unsupported image format: PPM"):
        decode(buffer.getvalue())


def test_eval_preset_normalises_with_config_constants() -> None:
    pixels = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    out = EvalPreset(mean=0.5, std=0.25)(pixels)
    assert torch.allclose(out, torch.tensor([[[-2.0, 2.0]]]))


def test_eval_preset_gives_numpy_and_torch_the_same_numbers(scan: Image.Image) -> None:
    """Serving (numpy, no torch) and training (tensors) normalise to bit-identical inputs."""
    pixels = np.stack(
        [load(encode(scan), image_size=64), np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64)]
    )
    for mean, std in ((0.5, 0.25), (0.4, 0.3), (0.1307, 0.3081)):
        preset = EvalPreset(mean=mean, std=std)
        served = preset(pixels)
        assert isinstance(served, np.ndarray) and served.dtype == np.float32
        assert np.array_equal(served, preset(torch.from_numpy(pixels)).numpy())


def test_train_preset_augments_but_keeps_shape_and_scale(scan: Image.Image) -> None:
    pixels = torch.from_numpy(load(encode(scan), image_size=64))  # the DataModule's edge
    torch.manual_seed(0)
    preset = TrainPreset(mean=0.5, std=0.25, hflip_prob=1.0, degrees=0, translate=0, scale=(1, 1))
    flipped = preset(pixels)
    assert torch.allclose(flipped, EvalPreset(mean=0.5, std=0.25)(pixels.flip(-1)))


def test_preprocess_is_load_then_eval_preset(scan: Image.Image) -> None:
    data = encode(scan)
    config = Preprocessing(image_size=96, mean=0.4, std=0.3)
    expected = EvalPreset(mean=0.4, std=0.3)(load(data, image_size=96))
    assert np.array_equal(preprocess(data, config), expected)
    assert config.as_dict() == {"image_size": 96, "mean": 0.4, "std": 0.3}


def test_large_jpeg_is_reduced_early_to_the_same_picture(scan: Image.Image) -> None:
    big = scan.resize((1600, 1200), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=95)
    reduced = decode(data, target_size=128)
    assert reduced.mode == "L"
    assert min(reduced.size) >= REDUCE_MARGIN * 128  # DCT scaling stops at 2x the target
    assert max(reduced.size) < 1600
    full = resize(decode(data), image_size=128).astype(np.int32)
    assert np.abs(load(data, image_size=128).astype(np.int32) - full).mean() < 1.5


@pytest.mark.parametrize("size", [(1500, 700), (300, 3000), (1400, 1400)])
def test_other_large_images_are_reduced_early_to_the_same_picture(
    scan: Image.Image, size: tuple[int, int]
) -> None:
    data = encode(scan.convert("L").resize(size, Image.Resampling.BICUBIC), "PNG")
    one_step = decode(data).resize((100, 100), Image.Resampling.BILINEAR)
    reduced = load(data, image_size=100)
    assert np.abs(reduced[0].astype(np.int32) - np.array(one_step, dtype=np.int32)).mean() < 1.5


def test_small_images_are_not_reduced(scan: Image.Image) -> None:
    small = scan.convert("L").resize((200, 180))
    assert decode(encode(small, "JPEG"), target_size=128).size == (200, 180)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_is_rescaled_exactly_in_strips(
    scan: Image.Image, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lightning_app.transforms.STRIP_PIXELS", 5_000)  # many strips
    gray = np.asarray(scan.convert("L"), dtype=np.float64) * 37.0 + 1000.0
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(gray.astype(dtype))
    expected = np.round((gray - gray.min()) / (gray.max() - gray.min()) * 255.0).astype(np.uint8)
    assert np.array_equal(np.asarray(decode(encode(image, "TIFF"))), expected)


def test_flat_16_bit_image_decodes_to_black() -> None:
    flat = Image.fromarray(np.full((64, 64), 4000, dtype=np.uint16))
    assert np.asarray(decode(encode(flat))).max() == 0


def test_pixel_cap_refuses_a_49_megapixel_16_bit_png_before_decoding() -> None:
    huge = Image.fromarray(np.zeros((7000, 7000), dtype=np.uint16))
    data = encode(huge)
    assert len(data) < 1_000_000 and MAX_PIXELS < 7000 * 7000
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too large: 7000x7000"):
        load(data, image_size=128)
    assert time.perf_counter() - start < 1.0  # refused from the header, not after decoding
