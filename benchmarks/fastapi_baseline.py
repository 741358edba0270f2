"""The seed's serving design, reproduced as the benchmark baseline (never shipped).

FastAPI + uvicorn, one image per request, eager torch, the upload written to disk and
read back before inference, inference run inline in the ``async`` endpoint (so the
event loop waits on the model). Differences from the seed, on purpose: the temporary
file gets a random name (never the client's), and the model and preprocessing are
exactly the ones the ``.mar`` serves, so only the serving design differs.

    EXPORT_DIR=<dir with state_dict.pt + model_meta.json> uvicorn benchmarks.fastapi_baseline:app
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, File, HTTPException, UploadFile

from lightning_app.models.backbones import build_backbone
from lightning_app.transforms import ImageDecodeError, Preprocessing, preprocess


def load_model(export_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the exported backbone (plain NCHW eager module, as the seed ran it)."""
    meta = json.loads((export_dir / "model_meta.json").read_text())
    model = build_backbone(meta["backbone"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])
    model.load_state_dict(torch.load(export_dir / "state_dict.pt", weights_only=True))
    return model.eval(), meta


MODEL, META = load_model(Path(os.environ.get("EXPORT_DIR", "model_export")))
PRE = Preprocessing(**META["preprocessing"])
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
    """One upload -> disk -> preprocess -> model -> every class with its probability."""
    with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
        tmp.write(await file.read())
        tmp.flush()
        try:
            x = torch.from_numpy(preprocess(Path(tmp.name), PRE)).unsqueeze(0)
        except ImageDecodeError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
    with torch.no_grad():
        probs = MODEL(x).softmax(dim=1)[0].tolist()
    ranked = sorted(zip(META["class_names"], probs, strict=True), key=lambda p: -p[1])
    return {"prediction": ranked[0][0], "probabilities": [{"label": n, "probability": p} for n, p in ranked]}
