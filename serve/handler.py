"""TorchServe handler for the brain-MRI classifier (packed into ``brain_mri.mar``).

It is the TorchServe adapter only: TorchServe's batch and context in, a
:class:`~lightning_app.inference.service.ModelService` call (the request limits, answers
and 4xx errors every runtime shares; ``serve/litserve_app.py`` is the other adapter),
TorchServe's per-request status and headers out. ``inference`` imports ``transforms``
(THE preprocessing, shared with the DataModule) and ``models.backbones``; never
Lightning, the LightningModule or the DataModule. The ``lightning_app`` package is
installed in the serving environment (``uv sync`` here, the serving image in production)
rather than copied into the ``.mar``: one installed copy is the single source of truth,
and the archive stays a pure model artefact (weights + class names + metadata).

Requests arrive in batches (``batchSize``/``maxBatchDelay`` in ``model-config.yaml``).
Each request is decoded on its own; a bad one gets its own 4xx status and JSON error
body through ``context.set_response_status(code, phrase, idx)`` while the rest of the
batch is served. ``POST /explanations/<model>`` reaches the same :func:`handle`, marked by
the frontend with the request header ``explain: True``; a batch may mix both kinds, and
each request is answered as its own kind (:mod:`lightning_app.inference.explain`). The
optional ``target`` (class name or index) of an explanation comes as the multipart field
``target`` or the request header ``X-Target`` (TorchServe 0.12 does not forward query
parameters of ``/predictions`` and ``/explanations`` to the handler). The serving
environment variables are read once, in :meth:`BrainMRIHandler.initialize`
(:class:`~lightning_app.inference.settings.ServeSettings`), and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_app.inference.records import RequestError
from lightning_app.inference.service import FORM_MESSAGE, Incoming, ModelService, body_size, payload
from lightning_app.inference.settings import ServeSettings

__all__ = ["FORM_MESSAGE", "BrainMRIHandler", "RequestError", "body_size", "handle", "payload"]


def ask(context: Any, method: str, *args: Any) -> Any:
    """``context.<method>(*args)``, or ``None`` where this context (or request index) has no answer."""
    try:
        return getattr(context, method)(*args)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def is_form(context: Any, idx: int) -> bool:
    """Whether request ``idx`` came as ``application/x-www-form-urlencoded`` (mangled image bytes)."""
    content_type = ask(context, "get_request_header", idx, "Content-Type") or ""
    return str(content_type).split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def request_id(context: Any, idx: int) -> str | None:
    """TorchServe's id of request ``idx`` (``None`` outside TorchServe)."""
    rid = ask(context, "get_request_id", idx)
    return None if rid is None else str(rid)


def is_explain(context: Any, idx: int) -> bool:
    """Whether request ``idx`` came through ``/explanations`` (TorchServe's ``explain`` header)."""
    return str(ask(context, "get_request_header", idx, "explain")) == "True"


#: Request header naming the class to explain (TorchServe 0.12 drops query parameters on
#: ``/predictions`` and ``/explanations``, but forwards every header).
TARGET_HEADER = "X-Target"


def header(context: Any, idx: int, name: str) -> str | None:
    """Request header ``name`` of request ``idx``, matched case-insensitively."""
    headers = ask(context, "get_all_request_header", idx)
    if isinstance(headers, dict):
        wanted = name.lower()
        found = [v for k, v in headers.items() if str(k).lower() == wanted and isinstance(v, str)]
        return found[0] if found else None
    value = ask(context, "get_request_header", idx, name)
    return value if isinstance(value, str) else None


def incoming(row: Any, context: Any, idx: int) -> Incoming:
    """TorchServe's request ``idx`` as the runtime-neutral :class:`Incoming`."""
    explain = is_explain(context, idx)
    return Incoming(
        row,
        form=is_form(context, idx),
        explain=explain,
        target=header(context, idx, TARGET_HEADER) if explain else None,
        request_id=request_id(context, idx),
    )


class BrainMRIHandler(ModelService):
    """The TorchServe adapter: TorchServe's batch in, :meth:`ModelService.serve`, JSON out."""

    def initialize(self, context: Any) -> None:
        """Read the settings (the environment, once) and load the model dir TorchServe unpacked."""
        workers = int((getattr(context, "model_yaml_config", None) or {}).get("minWorkers", 1))
        self.load(
            Path(context.system_properties["model_dir"]),
            ServeSettings.from_env(),
            workers=workers,
            model_name=str(context.manifest.get("model", {}).get("modelName", self.model_name)),
            metrics_cache=getattr(context, "metrics", None),
        )

    def handle(self, data: list[Any], context: Any) -> list[str]:
        """Serve one batch; bad requests fail alone with a 4xx and a JSON body.

        Every answered or refused request leaves a prediction-log line on stdout
        (:mod:`lightning_app.inference.predlog`) and updates the model metrics; its
        TorchServe request id is echoed in the ``X-Request-Id`` response header.
        """
        replies = self.serve([incoming(row, context, idx) for idx, row in enumerate(data)])
        for idx, reply in enumerate(replies):
            if reply.status != 200:
                context.set_response_status(reply.status, reply.phrase, idx)
            context.set_response_content_type(idx, "application/json")
            if reply.request_id is not None:
                context.set_response_header(idx, "X-Request-Id", reply.request_id)
        return [reply.body for reply in replies]


_service = BrainMRIHandler()


def handle(data: list[Any] | None, context: Any) -> list[str] | None:
    """TorchServe's module-level entry point (called with ``data=None`` on load)."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
