"""Overload and lost-request protection for LitServe: a fast 503, and a 504 instead of a hang.

TorchServe refuses a request once ``job_queue_size`` requests wait for its workers
(``serve/config.properties``); LitServe has no such limit, so :class:`ConcurrencyLimit`
gives it one. At most ``limit`` model requests (``/predictions/...``, ``/explanations/...``)
are in progress at once, waiting or in a batch; the next are answered at once, unread, with
the serving core's 503 (:func:`~lightning_app.inference.service.overloaded`), a JSON body and
``Retry-After``. ``/ping`` and everything else pass untouched. LitServe runs one API server
process with one event loop, so a plain counter is exact.

A request a worker held when it died is never answered by LitServe 0.2 (it fails only the
requests whose worker it already knows, and learns that from the answer), and its own
timeout only covers the queue: :class:`ConcurrencyLimit` also answers 504 (JSON,
``Retry-After``) to any model request still unanswered ``deadline`` seconds after it came.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightning_app.inference.records import RequestError
from lightning_app.inference.service import RETRY_AFTER_S, overloaded

#: The paths the limit guards (the model's routes).
MODEL_PATHS = ("/predictions/", "/explanations/")


class ConcurrencyLimit:
    """ASGI middleware: ``limit`` model requests in progress at most, each answered in ``deadline`` s.

    ``limit`` ``0``: no limit; ``deadline`` ``None``: no deadline.
    """

    def __init__(self, app: ASGIApp, limit: int, deadline: float | None = None) -> None:
        self.app = app
        self.limit = limit
        self.deadline = deadline
        #: Model requests in progress now, and refused so far.
        self.active = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request through, or refuse it when ``limit`` are already in progress."""
        if scope["type"] != "http" or not scope["path"].startswith(MODEL_PATHS):
            await self.app(scope, receive, send)
            return
        if 0 < self.limit <= self.active:
            self.refused += 1
            await refuse(send, overloaded(self.limit))
            return
        self.active += 1
        answered = False

        async def tracked(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracked), self.deadline)
        except TimeoutError:
            if not answered:
                message = (
                    f"no answer within {self.deadline:g} s (a worker stopped); retry after {RETRY_AFTER_S} s"
                )
                await refuse(send, RequestError(504, message))
        finally:
            self.active -= 1


async def refuse(send: Send, error: RequestError) -> None:
    """Send ``error`` as JSON with ``Retry-After`` (an overloaded or stuck server's answer)."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
