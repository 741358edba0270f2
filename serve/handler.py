"""TorchServe handler for the brain-MRI classifier (packed into ``brain_mri.mar``).

It imports **only** ``lightning_app.transforms`` (THE preprocessing, shared with the
DataModule) and ``lightning_app.models.backbones`` (to rebuild the plain network); never
Lightning, the LightningModule or the DataModule. The ``lightning_app`` package is
installed in the serving environment (``uv sync`` here, the serving image in production)
rather than copied into the ``.mar``: one installed copy is the single source of truth,
and the archive stays a pure model artefact (weights + class names + metadata).

Requests arrive in batches (``batchSize``/``maxBatchDelay`` in ``model-config.yaml``).
Each request is decoded on its own; a bad one gets its own 4xx status and JSON error
body through ``context.set_response_status(code, phrase, idx)`` while the rest of the
batch is served.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from lightning_app.models.backbones import build_backbone
from lightning_app.transforms import EvalPreset, ImageDecodeError, Preprocessing, load

logger = logging.getLogger(__name__)

#: Largest accepted upload in bytes (``SERVE_MAX_IMAGE_BYTES``); TorchServe's own
#: ``max_request_size`` in ``config.properties`` refuses bigger requests before they get here.
MAX_IMAGE_BYTES = int(os.environ.get("SERVE_MAX_IMAGE_BYTES", str(8 * 2**20)))
WEIGHTS = "state_dict.pt"
META = "model_meta.json"
INDEX_TO_NAME = "index_to_name.json"


class RequestError(Exception):
    """One request in a batch is unusable; carries its HTTP status and a message for the user."""

    PHRASES = {400: "Bad Request", 413: "Payload Too Large", 415: "Unsupported Media Type"}

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def phrase(self) -> str:
        """The HTTP reason phrase of :attr:`code`."""
        return self.PHRASES.get(self.code, "Bad Request")

    def body(self) -> dict[str, Any]:
        """Return the JSON error body, shaped like TorchServe's own errors."""
        return {"code": self.code, "type": "BadInput", "message": self.message}


def payload(row: Any) -> bytes:
    """Return the image bytes of one request: the raw body, or the multipart field ``data``."""
    if not isinstance(row, dict):
        raise RequestError(400, "malformed request")
    if "data" in row:
        value = row["data"]
    elif "body" in row:
        value = row["body"]
    elif row:
        fields = ", ".join(sorted(str(k) for k in row))
        raise RequestError(400, f"multipart request has no 'data' field (got: {fields})")
    else:
        value = b""
    if isinstance(value, bytearray | bytes):
        data = bytes(value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    else:
        raise RequestError(415, "expected image bytes (raw body or multipart field 'data'), got JSON")
    if not data:
        raise RequestError(400, "empty input: no image bytes received")
    if len(data) > MAX_IMAGE_BYTES:
        raise RequestError(
            413, f"image too large: {len(data):,} bytes exceeds the {MAX_IMAGE_BYTES:,} byte limit"
        )
    return data


FORM_MESSAGE = (
    "the image was sent as a URL-encoded form (curl's default for --data-binary): send the raw bytes with "
    "'Content-Type: application/octet-stream' (or image/jpeg, image/png), or as the multipart field 'data'"
)


def is_form(context: Any, idx: int) -> bool:
    """Whether request ``idx`` came as ``application/x-www-form-urlencoded`` (mangled image bytes)."""
    try:
        content_type = context.get_request_header(idx, "Content-Type") or ""
    except (AttributeError, IndexError, KeyError, TypeError):
        return False
    return str(content_type).split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


class BrainMRIHandler:
    """Decode -> shared preprocessing -> backbone -> every class with its probability."""

    def __init__(self) -> None:
        self.initialized = False
        self.model: torch.nn.Module | None = None
        self.class_names: list[str] = []
        self.version = ""
        self.model_name = "brain_mri"
        self.preprocessing = Preprocessing()
        self.normalise = EvalPreset(mean=self.preprocessing.mean, std=self.preprocessing.std)

    def initialize(self, context: Any) -> None:
        """Rebuild the backbone from the exported metadata and load its ``state_dict``."""
        model_dir = Path(context.system_properties["model_dir"])
        meta = json.loads((model_dir / META).read_text())
        index = json.loads((model_dir / INDEX_TO_NAME).read_text())
        self.class_names = [index[str(i)] for i in range(int(meta["num_classes"]))]
        self.version = str(meta["version"])
        self.model_name = str(context.manifest.get("model", {}).get("modelName", self.model_name))
        self.preprocessing = Preprocessing(**meta["preprocessing"])
        self.normalise = EvalPreset(mean=self.preprocessing.mean, std=self.preprocessing.std)
        threads = os.environ.get("SERVE_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        model = build_backbone(
            meta["backbone"], num_classes=len(self.class_names), in_channels=meta["in_channels"]
        )
        state = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(memory_format=torch.channels_last)
        size = self.preprocessing.image_size
        self.predict(torch.zeros(1, meta["in_channels"], size, size, dtype=torch.uint8))  # warm-up
        self.initialized = True
        logger.info(
            "loaded %s (%s, %d classes, version %s)",
            self.model_name,
            meta["backbone"],
            len(index),
            self.version,
        )

    def decode(self, row: Any) -> torch.Tensor:
        """One request -> ``uint8 [1, S, S]`` through the shared preprocessing."""
        data = payload(row)
        try:
            return load(data, image_size=self.preprocessing.image_size)
        except ImageDecodeError as exc:
            raise RequestError(400, str(exc)) from None
        except Exception as exc:  # an unexpected decoder failure stays this request's problem
            logger.warning("decode failed: %s: %s", type(exc).__name__, exc)
            raise RequestError(400, f"could not decode the image ({type(exc).__name__})") from None

    @torch.inference_mode()
    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """``uint8 [N, 1, S, S]`` -> probabilities ``float64 [N, num_classes]``."""
        assert self.model is not None, "initialize() first"
        x = self.normalise(pixels).contiguous(memory_format=torch.channels_last)
        return self.model(x).double().softmax(dim=1)

    def response(self, probs: torch.Tensor) -> dict[str, Any]:
        """Every class with its probability, most likely first."""
        ranked = sorted(zip(self.class_names, probs.tolist(), strict=True), key=lambda p: -p[1])
        return {
            "prediction": ranked[0][0],
            "probabilities": [{"label": name, "probability": p} for name, p in ranked],
            "model": self.model_name,
            "version": self.version,
        }

    def _decode_one(self, row: Any, idx: int, context: Any) -> torch.Tensor | RequestError:
        try:
            if row and is_form(context, idx):
                raise RequestError(415, FORM_MESSAGE)
            return self.decode(row)
        except RequestError as exc:
            return exc

    def handle(self, data: list[Any], context: Any) -> list[str]:
        """Serve one batch; bad requests fail alone with a 4xx and a JSON body."""
        results: list[str] = [""] * len(data)
        pixels: list[torch.Tensor] = []
        good: list[int] = []
        for idx, row in enumerate(data):
            outcome = self._decode_one(row, idx, context)
            if isinstance(outcome, RequestError):
                logger.info("request %d refused: %d %s", idx, outcome.code, outcome.message)
                context.set_response_status(outcome.code, outcome.phrase, idx)
                results[idx] = json.dumps(outcome.body())
            else:
                pixels.append(outcome)
                good.append(idx)
        if pixels:
            probs = self.predict(torch.stack(pixels))
            for idx, row_probs in zip(good, probs, strict=True):
                results[idx] = json.dumps(self.response(row_probs))
        for idx in range(len(data)):
            context.set_response_content_type(idx, "application/json")
        return results


_service = BrainMRIHandler()


def handle(data: list[Any] | None, context: Any) -> list[str] | None:
    """TorchServe's module-level entry point (called with ``data=None`` on load)."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
