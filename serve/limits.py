"""Overload and lost-request protection for LitServe: a fast 503, and a 504 instead of a hang.

TorchServe refuses a request once ``job_queue_size`` requests wait for its workers
(``serve/config.properties``); LitServe has no such limit, so :class:`ConcurrencyLimit`
gives it one. At most ``limit`` model requests (``/predictions/...``, ``/explanations/...``)
are in progress at once, waiting or in a batch; the next are answered as soon as their body
has arrived with the serving core's 503 (:func:`~lightning_app.inference.service.overloaded`), a JSON body and
``Retry-After``. ``/ping`` and everything else pass untouched. LitServe runs one API server
process with one event loop, so a plain counter is exact.

A request holds its slot until the last byte of its answer is handed to the server, not
until the app's clean-up after it: a client that sends its next request as soon as it has
read an answer never finds its own previous request still counted.

The limit counts requests whose body has arrived: the body is read first, within
``body_timeout`` seconds (:data:`BODY_TIMEOUT_S`; else 408, JSON), so clients that send
their bodies at a crawl hold a socket each, never a slot that normal clients need
(uvicorn itself has no body timeout; its ``timeout_keep_alive``, 5 s, closes idle
connections). A client that hangs up before its body is complete never reaches the model
and takes no slot.

A request a dead worker held is answered 503 at once
(:class:`serve.litserve_workers.FailFastServer`); one a hung worker holds, or one lost in
any other way, is never answered by LitServe 0.2, whose own timeout only covers the queue:
:class:`ConcurrencyLimit` also answers 504 (JSON, ``Retry-After``) to any model request
still unanswered ``deadline`` seconds after it came. LitServe keeps an entry per request in
its API server's response buffer (request id -> pending answer) and removes it only when
the answer comes, so each request never answered would stay there for good: with
``buffer`` (the server's response buffer, a :class:`ResponseBuffer`) the limit removes the
entries of every request it is done with.
"""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightning_app.inference.records import RequestError
from lightning_app.inference.service import RETRY_AFTER_S, overloaded

#: The paths the limit guards (the model's routes).
MODEL_PATHS = ("/predictions/", "/explanations/")
#: Seconds a client has to send a whole request body (TorchServe 0.12 has no such setting).
BODY_TIMEOUT_S = 20.0
#: Bytes buffered here at most: TorchServe's ``max_request_size``; the app refuses bigger bodies (413).
BUFFER_BYTES = 16 * 2**20
#: The response-buffer keys added while serving the current request (set by :class:`ConcurrencyLimit`).
ISSUED: ContextVar[list[str] | None] = ContextVar("issued", default=None)
#: The Prometheus gauge of the response buffer's entries (LitServe's API server).
BUFFER_GAUGE = "litserve_response_buffer_entries"


class ResponseBuffer(dict[str, Any]):
    """LitServe's response buffer that notes which request added each entry, and counts them.

    Every key set while :data:`ISSUED` holds a list is appended to it, so the request that
    caused it can remove it; the number of entries is the gauge :data:`BUFFER_GAUGE` (0
    when idle: anything else is requests that will never be answered).
    """

    def __init__(self) -> None:
        super().__init__()
        from prometheus_client import Gauge

        doc = "requests waiting in LitServe's response buffer for a worker's answer"
        self.gauge = Gauge(BUFFER_GAUGE, doc, registry=None, multiprocess_mode="livesum")

    def __setitem__(self, key: str, value: Any) -> None:
        issued = ISSUED.get()
        if issued is not None:
            issued.append(key)
        super().__setitem__(key, value)
        self.gauge.set(len(self))

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` (as ``dict.pop``) and update the gauge."""
        try:
            return super().pop(key, *default)
        finally:
            self.gauge.set(len(self))


class ConcurrencyLimit:
    """ASGI middleware: ``limit`` model requests in progress at most, each answered in ``deadline`` s.

    ``limit`` ``0``: no limit; ``deadline`` ``None``: no deadline; ``buffer``: the response
    buffer to remove a finished request's entries from (``None``: none).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        deadline: float | None = None,
        body_timeout: float = BODY_TIMEOUT_S,
        buffer: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.deadline = deadline
        self.body_timeout = body_timeout
        self.buffer = buffer
        #: Model requests in progress now, and refused so far.
        self.active = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body, then pass the request through, or refuse it (408, 503; 504 past the deadline)."""
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        too_big = declared.isdigit() and int(declared) > BUFFER_BYTES  # the app refuses it unread
        if scope["type"] != "http" or not scope["path"].startswith(MODEL_PATHS) or too_big:
            await self.app(scope, receive, send)
            return
        try:
            arrived = await asyncio.wait_for(read_body(receive), self.body_timeout)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout:g} s"
            await refuse(send, RequestError(408, message))
            return
        if arrived[-1]["type"] == "http.disconnect":  # the client left before its body was complete
            return  # nobody to answer, and no slot: counting it would refuse the clients still here
        if 0 < self.limit <= self.active:
            self.refused += 1
            await refuse(send, overloaded(self.limit))
            return
        self.active += 1
        answered, released, issued = False, False, list[str]()
        token = ISSUED.set(issued)  # the app's task copies this context: its buffer keys land here

        def release() -> None:  # once, and before the client can read its answer's end
            nonlocal released
            self.active -= 0 if released else 1
            released = True

        async def tracked(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            if message["type"] == "http.response.body" and not message.get("more_body"):
                release()  # else a client that sends again at once finds its own answered request counted
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replay(arrived, receive), tracked), self.deadline)
        except TimeoutError:
            if not answered:
                message = (
                    f"no answer within {self.deadline:g} s (a worker stopped); retry after {RETRY_AFTER_S} s"
                )
                release()
                await refuse(send, RequestError(504, message))
        finally:
            release()
            ISSUED.reset(token)
            if self.buffer is not None:  # the answered ones are gone already; a lost one is not
                for key in issued:
                    self.buffer.pop(key, None)


async def read_body(receive: Receive, limit: int = BUFFER_BYTES) -> list[Message]:
    """The request's messages up to its last body chunk (or a disconnect, or past ``limit`` bytes)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body") or size > limit:
            return messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then whatever ``receive`` gives."""
    pending = list(messages)

    async def receive_again() -> Message:
        return pending.pop(0) if pending else await receive()

    return receive_again


async def refuse(send: Send, error: RequestError) -> None:
    """Send ``error`` as JSON with ``Retry-After``, and close (an overloaded, stuck or starved request)."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
