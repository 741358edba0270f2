"""Overload and a killed worker, against both real runtimes on loopback.

Each runtime is started once for the module with a small limit (``LIMIT`` requests in
progress: TorchServe's ``job_queue_size`` through ``TS_JOB_QUEUE_SIZE``, LitServe's
``SERVE_MAX_CONCURRENCY``) so that a burst of a few dozen requests overloads it quickly.
Real TorchServe JVM and workers, real LitServe processes, real scans; every client call
has a timeout. The long versions (200 users, minutes of load, figures) are
``make bench-reliability`` (benchmarks/bench_reliability.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from benchmarks.reliability import Outcome, Server, SlowClients, closed_loop, post, with_config, worker_pids
from serve.limits import BUFFER_GAUGE
from serve.runtimes import start
from tests.conftest import REPO, free_port
from tests.serve.serve_images import real_jpeg

pytestmark = pytest.mark.slow  # starts real servers

#: Requests in progress each runtime takes before it refuses (small: a burst of 64 overloads it).
LIMIT = 4
#: The archive's ``responseTimeout`` (s): LitServe answers a request a hung worker holds 504 after it.
RESPONSE_TIMEOUT = 8
#: Seconds a worker of the ``holding`` server keeps a request while its batch (never full) fills.
HOLD_S = 10


@pytest.fixture(scope="module", params=["torchserve", "litserve"])
def limited(request: pytest.FixtureRequest, four_class_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    """A runtime serving the 4-class model with :data:`LIMIT` requests in progress at most."""
    env = {"TS_JOB_QUEUE_SIZE": str(LIMIT), "SERVE_MAX_CONCURRENCY": str(LIMIT)}
    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    workdir = tmp_path_factory.mktemp(request.param)
    mar = with_config(four_class_mar, workdir / four_class_mar.name, responseTimeout=RESPONSE_TIMEOUT)
    with start(request.param, mar, workdir, timeout=180, env=env, **ports) as server:
        yield server


def burst(url: str, n: int) -> list[Outcome]:
    """``n`` requests sent at the same moment from ``n`` threads."""
    image, ready = real_jpeg(), threading.Barrier(n)
    results: list[Outcome] = [Outcome(0, 0.0)] * n

    def one(i: int) -> None:
        ready.wait()
        results[i] = post(url, image, timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


def test_overload_is_refused_at_once_with_json_503_and_recovers(limited: Server) -> None:
    results = burst(limited.predict_url, 64)
    counts = Counter(r.status for r in results)
    assert set(counts) <= {200, 503}, f"timeouts or errors under overload: {counts}"
    assert counts[200] >= 1 and counts[503] >= 1, counts
    for refused in (r for r in results if r.status == 503):
        body = json.loads(refused.body)
        assert body["code"] == 503 and body["message"], body
        jsonschema.validate(body, json.loads((REPO / "docs" / "error.schema.json").read_text()))
        assert refused.seconds < 5, "a refusal must not wait for the queue"
        if limited.runtime == "LitServe":  # TorchServe's frontend sends no Retry-After
            assert refused.retry_after == "1"
    for answered in (r for r in results if r.status == 200):
        assert json.loads(answered.body)["prediction"]
    deadline = time.monotonic() + 10
    while post(limited.predict_url, real_jpeg(), timeout=10).status != 200:  # load gone: served again
        assert time.monotonic() < deadline, "not serving 10 s after the burst"
        time.sleep(0.2)


def test_users_waiting_retry_after_are_refused_at_most_once_a_second(
    limited: Server,
) -> None:
    """The polite half of ``make bench-reliability``'s overload: 4x the limit in users, each
    waiting ``Retry-After`` (1 s where TorchServe names none) after a refusal. Every user is
    refused at most about once a second, nothing times out, and the server keeps serving."""
    users, seconds = 4 * LIMIT, 4.0
    done = closed_loop(limited.predict_url, [real_jpeg()], users, seconds, timeout=30, polite=True)
    counts = Counter(o.status for _, o in done)
    assert set(counts) <= {200, 503}, f"timeouts or errors: {counts}"
    assert counts[200] >= LIMIT, counts
    assert counts[503] <= users * (seconds + 1), f"refused users did not wait: {counts}"


def test_clients_sending_bodies_at_a_crawl_do_not_starve_normal_ones(limited: Server) -> None:
    """20 connections trickle one byte a second: more than the limit of 4, yet normal requests pass."""
    with SlowClients(limited.predict_url, 20):
        time.sleep(1.0)
        answers = [post(limited.predict_url, real_jpeg(), timeout=30) for _ in range(8)]
    assert [a.status for a in answers] == [200] * 8, [(a.status, a.body[:80]) for a in answers]


def test_a_worker_killed_under_load_is_replaced_and_fails_at_most_the_requests_in_flight(
    limited: Server,
) -> None:
    """Both fail the dead worker's requests, and only those: TorchServe 507, LitServe 503 with
    ``Retry-After``, at once.

    TorchServe never answers the requests the dead worker was still gathering into a batch
    (test below), so for it a request left unanswered counts among those in flight. LitServe:
    the lost requests' entries are removed from its response buffer (read through the gauge
    on its metrics port), which would otherwise keep them for good.
    """
    clients, image = 3, real_jpeg()
    before = worker_pids(limited)
    assert len(before) == 2, before
    outcomes: list[tuple[float, Outcome]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            outcomes.append((time.monotonic(), post(limited.predict_url, image, timeout=30)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        deadline = killed_at + 90
        while not (set(worker_pids(limited)) - set(before)):  # a new worker process
            assert time.monotonic() < deadline, "the killed worker was not replaced within 90 s"
            time.sleep(0.2)
        # A request sent after the kill is answered. Not at once: when the dead worker had
        # gathered every client's request into its batch, TorchServe leaves those unanswered
        # and the clients send again only at their 30 s timeout.
        while not any(at > killed_at and o.status == 200 for at, o in list(outcomes)):
            assert time.monotonic() < deadline, "nothing sent after the kill was served within 90 s"
            time.sleep(0.2)
        time.sleep(2)  # still under load
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    failed = [o for _, o in outcomes if o.status != 200]
    assert len(failed) <= clients, f"{len(failed)} failed, more than the {clients} in flight: {failed[:3]}"
    answered = [o for o in failed if limited.runtime == "LitServe" or o.status != 0]
    assert all(o.status >= 500 and json.loads(o.body)["code"] == o.status for o in answered), answered[:3]
    assert post(limited.predict_url, image, timeout=30).status == 200
    assert len(worker_pids(limited)) == 2
    if limited.runtime == "LitServe":  # every request answered: none left in LitServe's buffer
        assert all(o.retry_after == "1" for o in failed), failed[:3]
        assert buffered(limited) == 0, "a lost request's entry stayed in LitServe's response buffer"


def test_requests_to_hung_workers_get_504_and_leave_no_entry_in_the_response_buffer(
    limited: Server,
) -> None:
    """Both workers stopped (SIGSTOP): the queued requests get 504 JSON at the deadline, and their
    entries leave LitServe's response buffer; once resumed (SIGCONT), the workers serve again."""
    if limited.runtime != "LitServe":
        pytest.skip("the deadline and the response buffer are LitServe's (TorchServe restarts a hung worker)")
    workers = worker_pids(limited)
    image, answers = real_jpeg(), list[Outcome]()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        clients = [
            threading.Thread(target=lambda: answers.append(post(limited.predict_url, image)))
            for _ in range(2)
        ]
        for t in clients:
            t.start()
        for t in clients:
            t.join(RESPONSE_TIMEOUT + 20)
        assert [a.status for a in answers] == [504, 504], answers
        assert all(json.loads(a.body)["code"] == 504 and a.retry_after == "1" for a in answers)
        assert buffered(limited) == 0, "the unanswered requests' entries stayed in LitServe's response buffer"
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while post(limited.predict_url, image, timeout=30).status != 200:
        assert time.monotonic() < deadline, "not serving 30 s after the workers resumed"
        time.sleep(0.2)
    assert worker_pids(limited) == workers


@pytest.fixture(scope="module")
def holding(four_class_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    """LitServe whose 2 workers hold each request :data:`HOLD_S` s: a batch of 8 that never fills."""
    workdir = tmp_path_factory.mktemp("holding")
    config = {"responseTimeout": 2 * HOLD_S, "maxBatchDelay": HOLD_S * 1000, "batchSize": 8, "minWorkers": 2}
    mar = with_config(four_class_mar, workdir / four_class_mar.name, **config)
    with start(
        "litserve", mar, workdir, timeout=180, inference_port=free_port(), metrics_port=free_port()
    ) as server:
        yield server


def test_requests_a_killed_litserve_worker_held_get_503_at_once_not_at_the_deadline(holding: Server) -> None:
    """One worker stopped (SIGSTOP), so the other takes every request, and holds it :data:`HOLD_S` s;
    it is killed (SIGKILL) while it holds them: each gets a JSON 503 with ``Retry-After`` soon after
    the kill, well before the deadline (``responseTimeout`` + 1 s), and nothing stays in the
    response buffer; the worker is replaced and the server serves again."""
    deadline = 2 * HOLD_S + 1  # the guard's (serve/limits.py): responseTimeout + 1 s
    killed, paused = worker_pids(holding)
    image, answers = real_jpeg(), list[tuple[float, Outcome]]()
    os.kill(paused, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # the paused worker asks the queue for nothing more
        clients = [
            threading.Thread(
                target=lambda: answers.append(
                    (time.monotonic(), post(holding.predict_url, image, timeout=60))
                )
            )
            for _ in range(3)
        ]
        sent_by = time.monotonic()
        for t in clients:
            t.start()
        while buffered(holding) < len(clients):  # all three queued for the workers
            assert time.monotonic() - sent_by < 30, "the requests did not reach LitServe's queue"
            time.sleep(0.1)
        time.sleep(1.0)  # the running worker takes them, and waits for its batch to fill
        killed_at = time.monotonic()
        os.kill(killed, signal.SIGKILL)
        for t in clients:
            t.join(90)
    finally:
        os.kill(paused, signal.SIGCONT)
    assert [o.status for _, o in answers] == [503] * 3, [(o.status, o.body[:120]) for _, o in answers]
    schema = json.loads((REPO / "docs" / "error.schema.json").read_text())
    for sent_at, answer in answers:
        body = json.loads(answer.body)
        jsonschema.validate(body, schema)
        assert body["code"] == 503 and body["type"] == "ServiceUnavailable" and "worker" in body["message"]
        assert answer.retry_after == "1"
        answered_at = sent_at + answer.seconds
        assert killed_at < answered_at < sent_at + deadline / 2, (
            "answered before the kill, or near the deadline"
        )
    assert buffered(holding) == 0, "a lost request's entry stayed in LitServe's response buffer"
    assert post(holding.predict_url, image, timeout=60).status == 200  # served after the kill
    after = worker_pids(holding)
    assert len(after) == 2 and killed not in after and paused in after, after


def test_torchserve_never_answers_the_requests_a_dead_worker_was_gathering_into_a_batch(
    four_class_mar: Path, tmp_path: Path
) -> None:
    """A limit of TorchServe 0.12 that its users must know (docs/serving.md, "Reliability").

    Its workers wait ``maxBatchDelay`` for a batch to fill; a worker that dies meanwhile is
    restarted, but the requests it had gathered are dropped (``BatchAggregator`` clears them)
    and never answered: the client's own timeout is all that ends them. LitServe answers them
    503 at once (test above). Should an upgrade fix this, this test fails and the docs change.
    """
    config = {"responseTimeout": 2 * HOLD_S, "maxBatchDelay": HOLD_S * 1000, "batchSize": 8, "minWorkers": 2}
    mar = with_config(four_class_mar, tmp_path / four_class_mar.name, **config)
    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    with start("torchserve", mar, tmp_path / "work", timeout=180, **ports) as server:
        workers, image, answers = worker_pids(server), real_jpeg(), list[Outcome]()
        clients = [
            threading.Thread(target=lambda: answers.append(post(server.predict_url, image, timeout=HOLD_S)))
            for _ in range(2)
        ]
        for t in clients:
            t.start()
        time.sleep(2.0)  # both taken by workers, which wait for their batches to fill
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for t in clients:
            t.join(HOLD_S + 20)
        assert [(a.status, a.error[:12]) for a in answers] == [(0, "TimeoutError")] * 2, answers
        deadline = time.monotonic() + 90
        while post(server.predict_url, image, timeout=30).status != 200:  # the workers came back
            assert time.monotonic() < deadline, "not serving 90 s after both workers were killed"
            time.sleep(0.5)


def buffered(server: Server) -> float:
    """LitServe's response-buffer entries, as its metrics port reports them."""
    with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{BUFFER_GAUGE} ")]
    assert values, f"{BUFFER_GAUGE} missing from /metrics"
    return sum(values)
