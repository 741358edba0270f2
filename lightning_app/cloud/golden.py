"""The golden set: a few fixed real scans whose answers a version must keep giving.

:func:`golden_scans` picks them (the first JPEG scans of each class of the embedded Br35H
set, or of any ``<class>/`` folder); :func:`record_answers` computes a ``.mar``'s answers
in-process at register time (the same inference core the handler runs); :func:`compare`
says where a served answer differs (another label, or a probability off by more than
``tolerance``). The promotion gate and the canary probe both compare against the recorded
answers.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

JPEG = b"\xff\xd8\xff"


def golden_scans(per_class: int = 3, root: Path | None = None) -> dict[str, bytes]:
    """``{"<class>_<file>": bytes}``: the first ``per_class`` JPEG scans of each class folder."""
    if root is None:
        from lightning_app.data.sources import embedded_br35h

        root = embedded_br35h()
    scans: dict[str, bytes] = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        picked = 0
        for path in sorted(class_dir.iterdir()):
            data = path.read_bytes() if path.is_file() else b""
            if data[:3] == JPEG and picked < per_class:
                scans[f"{class_dir.name}_{path.name}"] = data
                picked += 1
    return scans


def record_answers(mar: Path, scans: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """The archive's answer to each scan, computed in-process by the inference core."""
    from lightning_app.inference.engine import InferenceEngine

    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        with zipfile.ZipFile(mar) as archive:
            archive.extractall(tmp)
        engine = InferenceEngine(Path(tmp))
        return {name: engine.predict(engine.decode(data)[None])[0] for name, data in scans.items()}


def probabilities(answer: dict[str, Any]) -> dict[str, float]:
    """``{label: probability}`` of an answer."""
    return {p["label"]: float(p["probability"]) for p in answer.get("probabilities", [])}


def compare(expected: dict[str, Any], served: dict[str, Any], tolerance: float) -> str:
    """Why ``served`` is not ``expected`` (``""``: the same answer)."""
    if served.get("prediction") != expected.get("prediction"):
        return f"{served.get('prediction')!r} instead of {expected.get('prediction')!r}"
    want, got = probabilities(expected), probabilities(served)
    if set(want) != set(got):
        return f"labels {sorted(got)} instead of {sorted(want)}"
    worst = max((abs(want[k] - got[k]) for k in want), default=0.0)
    return f"probability off by {worst:.4f} > {tolerance:g}" if worst > tolerance else ""
