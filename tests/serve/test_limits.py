"""The LitServe guard in-process: a real Starlette app behind :class:`ConcurrencyLimit` (one
test over real HTTP, uvicorn on loopback).

The routes hold their requests on an event, so "in progress" is exact; the same middleware
against a real LitServe is in ``test_serve_reliability.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from serve.limits import ConcurrencyLimit, ResponseBuffer
from tests.conftest import free_port


def guarded(
    limit: int, deadline: float | None, release: asyncio.Event, body_timeout: float = 20.0
) -> httpx.AsyncClient:
    async def held(request: Request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"prediction": "tumor"})

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"status": "Healthy"})

    app = Starlette(routes=[Route("/predictions/brain_mri", held, methods=["POST"]), Route("/ping", ping)])
    guard = ConcurrencyLimit(app, limit, deadline, body_timeout)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")


def test_requests_beyond_the_limit_get_503_json_with_retry_after_at_once() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        async with guarded(2, None, release) as client:
            held = [
                asyncio.create_task(client.post("/predictions/brain_mri", content=b"x")) for _ in range(2)
            ]
            await asyncio.sleep(0.05)
            refused = await client.post("/predictions/brain_mri", content=b"x")
            assert (await client.get("/ping")).status_code == 200  # not a model route: never refused
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            body = json.loads(refused.content)
            assert body["code"] == 503 and body["type"] == "ServiceUnavailable"
            assert "2 requests already in progress" in body["message"]
            after = await client.post("/predictions/brain_mri", content=b"x")  # room again
            assert after.status_code == 200

    asyncio.run(scenario())


def test_a_request_unanswered_past_the_deadline_gets_504_json() -> None:
    async def scenario() -> None:
        async with guarded(0, 0.2, asyncio.Event()) as client:  # never released: a lost request
            lost = await client.post("/predictions/brain_mri", content=b"x")
            assert lost.status_code == 504 and lost.headers["retry-after"] == "1"
            assert json.loads(lost.content)["code"] == 504

    asyncio.run(scenario())


def test_the_buffer_entry_of_a_request_lost_past_the_deadline_is_removed_and_others_kept() -> None:
    """As LitServe's API server does, the route files an entry and removes it when it is answered."""

    async def scenario() -> None:
        buffer, answer = ResponseBuffer(), asyncio.Event()

        async def held(request: Request) -> JSONResponse:
            uid = request.headers["x-uid"]
            buffer[uid] = "pending"
            if uid == "answered":
                await answer.wait()
                buffer.pop(uid)
            else:
                await asyncio.Event().wait()  # its worker died: never answered
            return JSONResponse({"prediction": "tumor"})

        app = Starlette(routes=[Route("/predictions/brain_mri", held, methods=["POST"])])
        guard = ConcurrencyLimit(app, 0, 0.3, buffer=buffer)
        buffer["elsewhere"] = "not a request's"  # set outside any guarded request: never removed here
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
            lost = asyncio.create_task(client.post("/predictions/brain_mri", headers={"x-uid": "lost"}))
            answered = asyncio.create_task(
                client.post("/predictions/brain_mri", headers={"x-uid": "answered"})
            )
            await asyncio.sleep(0.1)
            assert set(buffer) == {"elsewhere", "lost", "answered"}
            answer.set()
            assert (await answered).status_code == 200
            assert (await lost).status_code == 504
        assert set(buffer) == {"elsewhere"}

    asyncio.run(scenario())


def test_bodies_sent_at_a_crawl_hold_no_slot_and_time_out_with_408() -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        release.set()
        async with guarded(1, None, release, body_timeout=0.5) as client:

            async def crawl() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"\0"
                    await asyncio.sleep(0.05)

            slow = [
                asyncio.create_task(client.post("/predictions/brain_mri", content=crawl())) for _ in range(5)
            ]
            await asyncio.sleep(0.1)
            normal = await client.post("/predictions/brain_mri", content=b"x")  # limit 1: the slow hold none
            assert normal.status_code == 200
            for answer in await asyncio.gather(*slow):
                assert answer.status_code == 408 and json.loads(answer.content)["code"] == 408

    asyncio.run(scenario())


def test_a_client_that_sends_again_at_once_is_not_refused_by_its_own_answered_request() -> None:
    """Over real HTTP (uvicorn on loopback): the app finishes a little after its answer has gone
    out, as LitServe's handler does; the slot is free before the client can read that answer,
    so one client sending request after request never meets a limit of 1."""

    async def answer_then_linger(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        await asyncio.sleep(0.3)  # clean-up after the answer

    port, guard = free_port(), ConcurrencyLimit(answer_then_linger, 1)
    server = uvicorn.Server(uvicorn.Config(guard, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/predictions/brain_mri"
        statuses = [httpx.post(url, content=b"x", timeout=10).status_code for _ in range(5)]
        assert statuses == [200] * 5, statuses
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_client_that_hangs_up_mid_body_never_reaches_the_model_nor_holds_a_slot() -> None:
    """Slow clients that give up (the crawl of ``SlowClients`` ending) once took a slot each for
    the app's clean-up, and real clients met "server busy" with fewer of them than the limit."""

    async def scenario() -> None:
        called: list[str] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            called.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        guard = ConcurrencyLimit(app, 1)
        scope: Scope = {"type": "http", "path": "/predictions/brain_mri", "headers": []}
        messages = [{"type": "http.request", "body": b"\0", "more_body": True}, {"type": "http.disconnect"}]
        sent: list[dict] = []

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        await guard(scope, receive, send)
        assert called == [] and sent == [] and guard.active == 0
        messages[:] = [{"type": "http.request", "body": b"x"}]
        await guard(scope, receive, send)  # limit 1: the next client is served
        assert called == ["/predictions/brain_mri"] and sent[0]["status"] == 200

    asyncio.run(scenario())
