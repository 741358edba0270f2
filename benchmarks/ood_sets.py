"""Real images that are not brain MRIs, found inside PyPI packages (for the OOD measurements).

Each set maps a name to ``[(label, image bytes), ...]``: the files exactly as the packages
ship them (PNG/JPEG), except the DICOM CT slice, which is rendered to an 8-bit PNG (min-max
window) because the serving decoder takes image files, not DICOM. Sources:

* ``scikit-image`` (dev group): the sample images bundled in ``skimage/data`` (photos,
  microscopy, immunohistochemistry, retina fundus, scanned text),
* ``matplotlib`` (train group): ``mpl-data/sample_data`` (Grace Hopper's portrait),
* ``gradio`` (ui group): its bundled demo photos,
* ``pydicom`` (dev group): ``CT_small.dcm``, a real 128x128 CT slice.

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
    ],
}


def package_dir(name: str) -> Path:
    """The installed folder of a package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed (uv sync --frozen installs the dev group)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def dicom_png(path: Path) -> bytes:
    """A single-frame DICOM -> 8-bit PNG bytes (min-max window)."""
    import pydicom

    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    span = max(float(pixels.max() - pixels.min()), 1e-9)
    image = Image.fromarray(((pixels - pixels.min()) / span * 255).round().astype(np.uint8), mode="L")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def read(package: str, relative: str) -> bytes:
    """The bytes of one file as a client would upload it."""
    path = package_dir(package) / relative
    return dicom_png(path) if path.suffix == ".dcm" else path.read_bytes()


@cache
def image_sets() -> dict[str, list[tuple[str, bytes]]]:
    """Every set, loaded: ``{set: [(package/file, bytes), ...]}``."""
    return {
        name: [(f"{package}/{Path(rel).name}", read(package, rel)) for package, rel in files]
        for name, files in FILES.items()
    }
