"""Read the tensors of a ``torch.save`` file into numpy arrays, without importing torch.

The exported artefacts that hold tensors (``state_dict.pt``, ``ood_stats.pt``,
``embedding_pca.pt``) are written by the export, where torch is at hand, and are plain
containers of tensors, numbers and strings (loadable with ``weights_only=True``). Serving
only reads them: this reader lets a torch-free server (numpy, Pillow and ONNX Runtime)
load the very same files. It understands torch's zip format (torch >= 1.6) and, like
``weights_only=True``, refuses anything but tensors, plain containers and scalars.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

#: torch's storage classes -> numpy dtypes (little-endian, as torch writes them here).
STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_rest: Any
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for numpy: a strided view of the storage, copied."""
    if not size:
        return np.array(storage[offset])
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    """Tensors become numpy arrays; any other global is refused (no code runs)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGES:
            return STORAGES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a tensor file")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, dtype, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def load(path: Path) -> Any:
    """The contents of a ``torch.save`` file, every tensor as a numpy array."""
    with zipfile.ZipFile(path) as archive:
        pickled = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        prefix = pickled[: -len("data.pkl")]
        return _Unpickler(archive.read(pickled), archive, prefix).load()
