"""Real images that are not brain MRIs, found inside PyPI packages (for the OOD measurements).

Each set maps a name to ``[(label, image bytes), ...]``: the files exactly as the packages
ship them (PNG/JPEG), except DICOM files and NumPy arrays, which are rendered to 8-bit PNGs
(DICOM: first frame, palette applied, min-max window) because the serving decoder takes
image files. Sources:

* ``scikit-image`` (dev group): the sample images bundled in ``skimage/data`` (photos,
  microscopy, immunohistochemistry, retina fundus, scanned text), and ``lfw_subset.npy``:
  200 real face photos of Labeled Faces in the Wild (25x25 px grayscale crops: small, so the
  decoder upsamples them, as it would a thumbnail a user uploads),
* ``matplotlib`` (train group): ``mpl-data/sample_data`` (Grace Hopper's portrait, a photo
  of a present),
* ``gradio`` (ui group): its bundled demo photos,
* ``pydicom`` (dev group): real DICOM test files of other modalities: CT slices,
  ultrasound (grayscale palette and colour Doppler) and a nuclear-medicine whole-body scan.
  (Its MR files are left out: MR is the training modality.)

Packages are located with ``importlib`` without importing them (no skimage import needed).
"""

from __future__ import annotations

import importlib.util
import io
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

#: set name -> (package, relative path) of each file. Sets count towards the "non-MRI" goal.
FILES: dict[str, list[tuple[str, str]]] = {
    "photos": [
        ("skimage", "data/astronaut.png"),
        ("skimage", "data/camera.png"),
        ("skimage", "data/chelsea.png"),
        ("skimage", "data/coffee.png"),
        ("skimage", "data/coins.png"),
        ("skimage", "data/motorcycle_left.png"),
        ("skimage", "data/rocket.jpg"),
        ("skimage", "data/brick.png"),
        ("skimage", "data/grass.png"),
        ("skimage", "data/gravel.png"),
        ("skimage", "data/moon.png"),
        ("skimage", "data/hubble_deep_field.jpg"),
        ("skimage", "data/clock_motion.png"),
        ("skimage", "data/color.png"),
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
        ("gradio", "media_assets/images/cheetah.jpg"),
        ("gradio", "media_assets/images/lion.jpg"),
        ("gradio", "media_assets/images/tower.jpg"),
        ("gradio", "test_data/cheetah2.jpg"),
    ],
    "microscopy_histology": [
        ("skimage", "data/cell.png"),
        ("skimage", "data/ihc.png"),
    ],
    "documents_graphics": [
        ("skimage", "data/page.png"),
        ("skimage", "data/text.png"),
        ("skimage", "data/horse.png"),
        ("skimage", "data/logo.png"),
        ("matplotlib", "mpl-data/sample_data/logo2.png"),
    ],
    "other_medical": [
        ("skimage", "data/retina.jpg"),
        ("skimage", "data/microaneurysms.png"),
        ("pydicom", "data/test_files/CT_small.dcm"),
        ("pydicom", "data/test_files/693_J2KI.dcm"),
        ("pydicom", "data/test_files/JPEG2000.dcm"),
        ("pydicom", "data/test_files/examples_palette.dcm"),
        ("pydicom", "data/test_files/examples_rgb_color.dcm"),
        ("pydicom", "data/test_files/examples_ybr_color.dcm"),
        ("pydicom", "data/test_files/examples_jpeg2k.dcm"),
    ],
}
#: set name -> (package, relative path) of a ``[N, H, W]`` array of images in ``[0, 1]``.
ARRAYS: dict[str, tuple[str, str]] = {
    "faces_lfw_25px": ("skimage", "data/lfw_subset.npy"),
}


def package_dir(name: str) -> Path:
    """The installed folder of a package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed (uv sync --frozen installs the dev group)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def png(pixels: np.ndarray) -> bytes:
    """An image array (``[H, W]`` or ``[H, W, 3]``, any numeric type) -> 8-bit PNG bytes, min-max window."""
    values = pixels.astype(np.float64)
    span = max(float(values.max() - values.min()), 1e-9)
    scaled = ((values - values.min()) / span * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(scaled, mode="RGB" if scaled.ndim == 3 else "L").save(buf, format="PNG")
    return buf.getvalue()


def dicom_png(path: Path) -> bytes:
    """A DICOM file -> 8-bit PNG bytes of its first frame (palette applied, min-max window)."""
    import pydicom
    from pydicom.pixels.processing import apply_color_lut

    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    return png(pixels)


def read(package: str, relative: str) -> bytes:
    """The bytes of one file as a client would upload it."""
    path = package_dir(package) / relative
    return dicom_png(path) if path.suffix == ".dcm" else path.read_bytes()


@cache
def image_sets() -> dict[str, list[tuple[str, bytes]]]:
    """Every set, loaded: ``{set: [(package/file, bytes), ...]}``."""
    sets = {
        name: [(f"{package}/{Path(rel).name}", read(package, rel)) for package, rel in files]
        for name, files in FILES.items()
    }
    for name, (package, rel) in ARRAYS.items():
        images = np.load(package_dir(package) / rel)
        sets[name] = [(f"{package}/{Path(rel).name}[{i}]", png(image)) for i, image in enumerate(images)]
    return sets
