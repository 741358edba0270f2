"""The OOD guard's colour check on real images: Br35H scans, the same scan in false colour, and
real colour photos that ship inside PyPI packages (``benchmarks/ood_sets.py``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.ood_sets import read as package_file
from lightning_app.data.sources import embedded_br35h
from lightning_app.inference import colour
from lightning_app.transforms import ImageDecodeError, Preprocessing
from tests.serve.serve_images import encode, real_jpeg, real_scan, sixteen_bit, tinted

PHOTO = ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")


def chroma_of(data: bytes) -> float:
    return colour.colour_of(data, 128)


def test_real_scans_stored_in_rgb_are_far_below_the_limit_and_colour_images_far_above() -> None:
    scans = sorted((embedded_br35h() / "yes").glob("*.jpg"))[:40]
    assert max(chroma_of(p.read_bytes()) for p in scans) < colour.LIMIT / 2
    assert chroma_of(tinted("PNG")) > colour.LIMIT
    assert chroma_of(tinted("JPEG")) > colour.LIMIT  # decoded through libjpeg's YCbCr draft
    assert chroma_of(package_file(*PHOTO)) > colour.LIMIT
    palette = Image.open(io.BytesIO(tinted())).convert("P", palette=Image.Palette.ADAPTIVE)
    assert chroma_of(encode(palette, "PNG")) > colour.LIMIT
    assert chroma_of(sixteen_bit()) == chroma_of(encode(real_scan(), "PNG")) == 0.0


@pytest.mark.parametrize("head_crop", [False, True])
@pytest.mark.parametrize("image", ["rgb_jpeg", "grey_png", "tinted_jpeg", "sixteen_bit"])
def test_read_gives_exactly_the_pixels_of_the_shared_preprocessing(image: str, head_crop: bool) -> None:
    data = {
        "rgb_jpeg": real_jpeg(),
        "grey_png": encode(real_scan(), "PNG"),
        "tinted_jpeg": tinted("JPEG"),
        "sixteen_bit": sixteen_bit(),
    }[image]
    prep = Preprocessing(image_size=96, head_crop=head_crop)
    pixels, _ = colour.read(data, prep)
    assert pixels.dtype == prep.load(data).dtype and (pixels == prep.load(data)).all()
    with pytest.raises(ImageDecodeError):
        colour.read(b"not an image", prep)


def test_check_flags_a_colour_image_warns_and_keeps_the_rest() -> None:
    answer = {"prediction": "no_tumor", "in_distribution": {"ok": True, "score": 1.0, "threshold": 9.0}}
    colour.check(answer, 3.2, colour.LIMIT)
    assert answer["in_distribution"] == {
        "ok": True, "score": 1.0, "threshold": 9.0, "colour": 3.2, "colour_limit": colour.LIMIT
    }  # fmt: skip
    assert "warning" not in answer
    colour.check(answer, 51.0, colour.LIMIT)
    assert answer["in_distribution"]["ok"] is False and answer["prediction"] == "no_tumor"
    assert "in colour (mean chroma 51 > 25 grey levels)" in answer["warning"]
    untouched = {"prediction": "tumor", "in_distribution": {"ok": True}}
    assert colour.check(dict(untouched), 80.0, None) == untouched  # an export without the check
    assert colour.check({"prediction": "tumor"}, 80.0, colour.LIMIT) == {"prediction": "tumor"}  # no guard


def test_the_export_keeps_the_limit_on_grey_scans_and_drops_it_where_it_would_flag_them(
    tmp_path: Path,
) -> None:
    scans = sorted((embedded_br35h() / "no").glob("*.jpg"))[:30]
    prep = Preprocessing(image_size=64)
    kept = colour.validate_limit(scans[:20], scans[20:], prep)
    assert kept == {"limit": colour.LIMIT, "val_flagged": 0.0, "test_flagged": 0.0}
    stained = tmp_path / "stained.png"  # a data set whose scans carry colour (e.g. burnt-in annotations)
    stained.write_bytes(tinted())
    dropped = colour.validate_limit([stained, *scans[:5]], scans[20:], prep)
    assert dropped["limit"] is None and dropped["val_flagged"] == pytest.approx(1 / 6)
    assert "16.7% of the validation scans" in dropped["reason"]
    unreadable = tmp_path / "broken.jpg"
    unreadable.write_bytes(b"\xff\xd8\xff broken")
    assert colour.validate_limit([unreadable], [], prep)["reason"] == "no validation scans to check it on"
