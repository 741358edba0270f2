"""Overload protection for LitServe: a fast 503 instead of a queue that grows into timeouts.

TorchServe refuses a request once ``job_queue_size`` requests wait for its workers
(``serve/config.properties``); LitServe has no such limit, so :class:`ConcurrencyLimit`
gives it one. At most ``limit`` model requests (``/predictions/...``, ``/explanations/...``)
are in progress at once, waiting or in a batch; the next are answered at once, unread, with
the serving core's 503 (:func:`~lightning_app.inference.service.overloaded`), a JSON body and
``Retry-After``. ``/ping`` and everything else pass untouched. LitServe runs one API server
process with one event loop, so a plain counter is exact.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from lightning_app.inference.service import RETRY_AFTER_S, overloaded

#: The paths the limit guards (the model's routes).
MODEL_PATHS = ("/predictions/", "/explanations/")


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` model requests in progress (``0``: no limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        #: Model requests in progress now, and refused so far.
        self.active = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request through, or refuse it when ``limit`` are already in progress."""
        if scope["type"] != "http" or self.limit <= 0 or not scope["path"].startswith(MODEL_PATHS):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self.refused += 1
            await refuse(send, self.limit)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def refuse(send: Send, limit: int) -> None:
    """Send the 503 answer of an overloaded server (JSON body, ``Retry-After``)."""
    error = overloaded(limit)
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
