"""The LitServe runtime: the TorchServe REST contract on the same serving core.

``python -m serve.litserve_app`` (``make serve RUNTIME=litserve``) serves a ``.mar`` (the
artefact TorchServe serves, unpacked into a work folder) with LitServe: ``POST
/predictions/<model>``, ``POST /explanations/<model>`` and ``GET /ping`` on ``$PORT``,
Prometheus ``GET /metrics`` on ``127.0.0.1:$SERVE_METRICS_PORT``. Answers, 4xx JSON errors,
limits, prediction log and metrics are those of
:class:`~lightning_app.inference.service.ModelService` (the TorchServe handler adapts it too):
this module only turns HTTP requests into :class:`Incoming` values (LitServe's API server) and
:class:`Reply` values into responses (its workers). Workers and batching come from the
``.mar``'s ``model-config.yaml``; settings are read once, at start. No ``from __future__
import annotations``: LitServe reads ``decode_request``'s annotation at run time.
"""

import contextlib
import json
import os
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from litserve.utils import WorkerSetupStatus
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.inference.engine import TorchMissingError, check_backend
from lightning_app.inference.records import RequestError
from lightning_app.inference.service import Incoming, ModelService, Reply
from lightning_app.inference.settings import ServeSettings, SettingsError
from serve import litserve_workers as lw
from serve.launcher import LaunchError
from serve.limits import ConcurrencyLimit, ResponseBuffer
from serve.runtimes import env_port

#: TorchServe's ``max_request_size`` (``serve/config.properties``): bigger bodies are refused unread.
MAX_REQUEST_BYTES = 16 * 2**20
#: Marks a request that came through ``/explanations`` (set by :class:`ExplainRoute` only).
EXPLAIN_HEADER = "x-brain-mri-explain"
#: Request header naming the class to explain (as in the TorchServe handler).
TARGET_HEADER = "x-target"


class ExplainRoute:
    """ASGI middleware: ``/explanations/<model>`` is served by ``/predictions/<model>``, marked.

    As TorchServe's frontend marks explanations with a header, this marks them with
    :data:`EXPLAIN_HEADER` (removed from every client request first, so only the path decides).
    """

    def __init__(self, app: ASGIApp, model_name: str = MODEL_NAME) -> None:
        self.app = app
        self.explain_path = f"/explanations/{model_name}"
        self.predict_path = f"/predictions/{model_name}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the scope of an explanation; pass everything else through unmarked."""
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != EXPLAIN_HEADER.encode()]
            if scope["path"].rstrip("/") == self.explain_path:
                headers.append((EXPLAIN_HEADER.encode(), b"True"))
                scope = {**scope, "path": self.predict_path, "raw_path": self.predict_path.encode()}
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"request too large: {int(declared):,} bytes exceeds the {limit:,} byte limit"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request too large: more than the {limit:,} byte limit")
    request._body = bytes(body)  # starlette's cache: request.form() parses these bytes
    return request._body


async def read_incoming(request: Request) -> Incoming:
    """An HTTP request as the serving core's :class:`Incoming` (runs in LitServe's API server)."""
    body = await read_body(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    row: dict[str, Any] = {"body": body}
    if media == "multipart/form-data":
        form = await request.form(max_part_size=MAX_REQUEST_BYTES)
        row = {}
        for key, value in form.multi_items():
            row[key] = await value.read() if isinstance(value, UploadFile) else value
        await form.close()
    elif media == "application/json":  # TorchServe hands the parsed JSON over: refused as 415
        with contextlib.suppress(ValueError):
            row = {"body": json.loads(body)}
    explain = request.headers.get(EXPLAIN_HEADER) == "True"
    return Incoming(
        row,
        form=media == "application/x-www-form-urlencoded",
        explain=explain,
        target=request.headers.get(TARGET_HEADER) if explain else None,
        request_id=str(uuid.uuid4()),
    )


class BrainMRIAPI(ls.LitAPI):
    """LitServe's API for the model: batches of :class:`Incoming` -> :class:`Reply` responses."""

    def __init__(
        self, model_dir: Path, settings: ServeSettings, *, model_name: str = MODEL_NAME,
        route: str | None = None, workers: int = 1, max_batch_size: int = 8, batch_timeout: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            api_path=f"/predictions/{route or model_name}",
            loop=lw.FirstRequestBatchedLoop() if max_batch_size > 1 else "auto",
        )
        self.model_dir, self.settings = model_dir, settings
        self.model_name, self.workers = model_name, workers
        self.service = ModelService()

    def setup(self, device: str) -> None:
        """Load the model in this inference worker (metrics into the multiprocess folder)."""
        from serve.litserve_metrics import PrometheusCache

        lw.name_worker()
        self.service.load(
            self.model_dir,
            self.settings,
            workers=self.workers,
            model_name=self.model_name,
            metrics_cache=PrometheusCache(),
        )

    async def authorize(self) -> None:
        """No authentication, as on TorchServe (Cloud Run's IAM or a proxy; no ``LIT_SERVER_API_KEY``).

        Async: LitServe's default, a sync no-op, cost each request a thread-pool hop.
        """

    def decode_request(self, request: Annotated[Incoming, Depends(read_incoming)]) -> Incoming:
        """The request as :func:`read_incoming` built it (the core decodes the image)."""
        return request

    def batch(self, inputs: list[Incoming]) -> list[Incoming]:
        """A batch is the list of requests (each decoded, or refused, on its own)."""
        return inputs

    def predict(self, x: Any) -> list[Reply]:
        """Serve a batch (or one request when batching is off) through the shared core."""
        return self.service.serve(x if isinstance(x, list) else [x])

    def unbatch(self, output: list[Reply]) -> list[Reply]:
        """One reply per request."""
        return output

    def encode_response(self, output: Any) -> Response:
        """A :class:`Reply` (or a one-element list of them) as the JSON response."""
        reply: Reply = output[0] if isinstance(output, list) else output
        headers = {"X-Request-Id": reply.request_id} if reply.request_id else None
        return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)


def unpack(mar: Path, dest: Path) -> Path:
    """Unzip ``mar`` into ``dest`` (refusing members outside it) and return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(mar) as archive:
        for name in archive.namelist():
            if not (dest / name).resolve().is_relative_to(dest.resolve()):
                raise ValueError(f"{mar}: member {name!r} would land outside {dest}")
        archive.extractall(dest)
    return dest


def model_config(model_dir: Path) -> dict[str, Any]:
    """The ``.mar``'s ``model-config.yaml`` (workers, batching), ``{}`` when it has none."""
    import yaml

    path = model_dir / "model-config.yaml"
    return dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def model_name_of(model_dir: Path, default: str = MODEL_NAME) -> str:
    """``modelName`` from the archive's ``MAR-INF/MANIFEST.json``, else ``default``."""
    manifest = model_dir / "MAR-INF" / "MANIFEST.json"
    model = json.loads(manifest.read_text()).get("model", {}) if manifest.is_file() else {}
    return str(model.get("modelName", default))


def add_error_handlers(app: FastAPI) -> None:
    """Answer refusals made before a worker sees the request, and HTTP errors, as TorchServe-shaped JSON."""

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return JSONResponse(exc.body(), status_code=exc.code)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, lw.WorkerLost):  # lost with its worker: the overload refusal's body
            body = exc.error.body()
        else:
            body = {"code": exc.status_code, "type": type(exc).__name__, "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(RequestError, refused)
    app.add_exception_handler(HTTPException, http_error)


def build_server(model_dir: Path, settings: ServeSettings, route: str | None = None) -> ls.LitServer:
    """A LitServer for an unpacked ``.mar``: the model's API, ``/ping`` and TorchServe-shaped errors.

    As in TorchServe, the URL names the model as the archive's file does (``route``, default
    the archive's ``modelName``), while answers carry the archive's ``modelName``.
    """
    config, name = model_config(model_dir), model_name_of(model_dir)
    route = route or name
    workers = int(config.get("minWorkers", 1))
    api = BrainMRIAPI(
        model_dir, settings, model_name=name, route=route, workers=workers,
        max_batch_size=int(config.get("batchSize", 8)),
        batch_timeout=float(config.get("maxBatchDelay", 10)) / 1e3,
    )  # fmt: skip
    timeout = float(config.get("responseTimeout", 30))
    buffer = ResponseBuffer()  # LitServe's; the guard: 503 when full, 504 when stuck, lost entries removed
    guard = {"limit": settings.max_concurrency, "deadline": timeout + 1, "buffer": buffer}
    server = lw.FailFastServer(  # a dead worker's requests: 503 at once
        api, accelerator="cpu", devices=1, workers_per_device=workers, timeout=timeout,
        middlewares=[(ExplainRoute, {"model_name": route}), (ConcurrencyLimit, guard)],
        restart_workers=True,  # a dead worker is replaced (as in TorchServe); workers announce requests
    )  # fmt: skip
    server.response_buffer = buffer
    app: FastAPI = server.app

    async def ping() -> JSONResponse:
        statuses = list(getattr(server, "workers_setup_status", {}).values())  # set by run()
        healthy = bool(statuses) and all(s == WorkerSetupStatus.READY for s in statuses)
        body = {"status": "Healthy" if healthy else "Unhealthy"}
        return JSONResponse(body, status_code=200 if healthy else 500)

    app.add_api_route("/ping", ping, methods=["GET"])
    add_error_handlers(app)
    return server


def main(env: Mapping[str, str] | None = None) -> int:
    """Serve ``SERVE_MAR`` on ``SERVE_HOST:PORT`` until stopped; a start that fails is one line, exit 2.

    Environment as for ``python -m serve`` (``SERVE_MAR``, ``PORT``, ``SERVE_HOST``,
    ``SERVE_METRICS_PORT``, ``SERVE_WORKDIR``) plus the :class:`ServeSettings` variables.
    """
    env = os.environ if env is None else env
    try:
        settings = ServeSettings.from_env(env)
        mar = Path(env.get("SERVE_MAR", "model_store/brain_mri.mar"))
        if not mar.is_file():
            raise SettingsError(f"model archive not found: {mar} (build it with: make mar)")
        port, metrics_port = env_port(env, "PORT", 8080), env_port(env, "SERVE_METRICS_PORT", 8082)
        workdir = Path(env.get("SERVE_WORKDIR") or tempfile.mkdtemp(prefix="brain-mri-litserve-"))
        model_dir = unpack(mar, workdir / "model")
        check_backend(model_dir, settings.precision)  # an eager-only archive without torch: one line
        multiproc = workdir / "prometheus"
        multiproc.mkdir(parents=True, exist_ok=True)
        for stale in multiproc.glob("*.db"):  # an earlier run's counts
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)  # before any worker starts
        from serve.litserve_metrics import serve_metrics

        serve_metrics(metrics_port, str(multiproc))
        server = build_server(model_dir, settings, route=mar.stem)
        lw.fork_workers(server)  # workers start from this process's imports, and are replaced fast
        host = env.get("SERVE_HOST", "127.0.0.1")
        server.run(host=host, port=port, num_api_servers=1, generate_client_file=False, log_level="warning")
    except (SettingsError, LaunchError, TorchMissingError, ValueError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # LitServe: a worker failed to load the model
        print(f"error: the model did not load ({exc}); see the worker's error above", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
