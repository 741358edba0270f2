"""``make bench-predlog``: what the prediction log costs the handler, side by side.

The TorchServe handler runs in-process (``serve.handler.BrainMRIHandler`` with a stand-in
context that has request ids), on batches of 8 real held-out Br35H scans, alternating
rounds with the prediction log on (``PREDLOG_ENABLED=1``, every prediction logged, lines
written to ``/dev/null``) and off, so that drifts of the shared machine hit both alike.
Reports images/s of each (median over rounds) and the relative cost. With ``--server``, the
same comparison through two real TorchServe servers (one after the other, 8 concurrent
clients), where the lines also cross the worker->JVM pipe and the log4j2 filter.

``--cpu`` (``make bench-serve-cpu``) measures instead the handler's CPU per request
(:func:`cpu_per_request`: process time, every thread of the process, which a busy-waiting
thread pool also costs) with numpy's BLAS on one thread, as served, against its default of
one thread per core, and writes the ``bench-serve-cpu`` section.

    uv run python -m benchmarks.bench_predlog --mar model_store/brain_mri.mar --data data/br35h [--server]
    uv run python -m benchmarks.bench_predlog --mar model_store/brain_mri.mar --data data/br35h --cpu
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from benchmarks.docsection import write_section
from lightning_app.data import manifest
from lightning_app.inference.artefacts import read_meta
from lightning_app.inference.settings import LogSettings
from lightning_app.inference.threads import BLAS_THREADS, threads_per_worker
from serve.handler import BrainMRIHandler

REPO = Path(__file__).resolve().parents[1]


class Context:
    """What the handler uses of TorchServe's context."""

    def __init__(self, model_dir: str) -> None:
        self.system_properties = {"model_dir": model_dir}
        self.manifest = {"model": {"modelName": "brain_mri"}}

    def get_request_id(self, idx: int) -> str:
        return f"00000000-0000-0000-0000-{idx:012d}"

    def get_request_header(self, idx: int, key: str) -> str | None:
        return None

    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        pass

    def set_response_content_type(self, idx: int, value: str) -> None:
        pass

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        pass


def images(data: Path, n: int) -> list[bytes]:
    rows = manifest.split_rows(data, "test")[:n]
    return [(data / r.path).read_bytes() for r in rows]


def in_process(model_dir: str, scans: list[bytes], rounds: int, batch: int) -> dict[str, Any]:
    """Alternate rounds with the log on and off; images/s per round."""
    service = BrainMRIHandler()
    context = Context(model_dir)
    service.initialize(context)
    assert service.log is not None
    service.log.stream = open(os.devnull, "w")  # noqa: SIM115
    batches = [[{"body": b} for b in scans[i : i + batch]] for i in range(0, len(scans), batch)]
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(2 * rounds + 2):
        mode = "on" if r % 2 else "off"
        service.log.settings = LogSettings(enabled=mode == "on")
        started = time.perf_counter()
        for rows in batches:
            service.handle(rows, context)
        if r >= 2:  # two warm-up rounds
            rates[mode].append(len(scans) / (time.perf_counter() - started))
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {
        "images_per_s_log_on": round(on, 1),
        "images_per_s_log_off": round(off, 1),
        "cost": round(1 - on / off, 4),
        "rounds": rounds,
        "batch": batch,
        "images": len(scans),
    }


def cpu_per_request(model_dir: str, scans: list[bytes], rounds: int, batch: int) -> dict[str, Any]:
    """The handler's CPU ms per request, numpy's BLAS on one thread (served) vs one per core.

    Alternating rounds over ``scans`` in batches of ``batch`` (median per setting, after two
    warm-up rounds); CPU is this process's time, all threads: the forward pass, decoding,
    the OOD and log maths and any thread pool busy-waiting meanwhile. Also the JSON size of
    an answer and the number of ONNX Runtime runs per batch.
    """
    service = BrainMRIHandler()
    context = Context(model_dir)
    service.initialize(context)  # pins BLAS to one thread, as in a served worker
    assert service.log is not None and service.engine is not None
    service.log.stream = open(os.devnull, "w")  # noqa: SIM115
    batches = [[{"body": b} for b in scans[i : i + batch]] for i in range(0, len(scans), batch)]
    settings = {"one": BLAS_THREADS, "cores": threads_per_worker(1)}
    runs = [0]  # ONNX Runtime runs (one per batch expected: the OOD guard and log read the same pass)
    backend = service.engine.backend  # a cascade: both its graphs' runs count
    sessions = [
        getattr(b, "session", None)
        for b in (backend, getattr(backend, "first", None), getattr(backend, "followers", None))
    ]
    session = next((s for s in sessions if s is not None), None)
    for each in filter(None, sessions):
        each.run = counting(each.run, runs)
    cpu: dict[str, list[float]] = {"one": [], "cores": []}
    answer = ""
    for r in range(2 * rounds + 2):
        mode = "cores" if r % 2 else "one"
        with threadpool_limits(limits=settings[mode], user_api="blas"):
            runs[0], started = 0, time.process_time()
            for rows in batches:
                answer = service.handle(rows, context)[0]
            if r >= 2:
                cpu[mode].append(1e3 * (time.process_time() - started) / len(scans))
    return {
        "cpu_ms_one_blas_thread": round(statistics.median(cpu["one"]), 2),
        "cpu_ms_blas_per_core": round(statistics.median(cpu["cores"]), 2),
        "blas_threads_default": settings["cores"],
        "onnx_runs_per_batch": runs[0] / len(batches) if session is not None else None,
        "answer_bytes": len(answer),
        "rounds": rounds,
        "batch": batch,
        "images": len(scans),
    }


def counting(run: Any, runs: list[int]) -> Any:
    """``run`` that adds one to ``runs[0]`` per call (an ONNX Runtime session's ``run``)."""

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs[0] += 1
        return run(*args, **kwargs)

    return counted


def cpu_line(result: dict[str, Any]) -> str:
    """One sentence of :func:`cpu_per_request`'s figures (docs/benchmarks.md)."""
    ratio = result["cpu_ms_blas_per_core"] / result["cpu_ms_one_blas_thread"]
    return (
        f"Handler CPU per request in-process ({result['images']} test scans in batches of "
        f"{result['batch']}, median of {result['rounds']} alternating rounds, all threads): "
        f"**{result['cpu_ms_one_blas_thread']:.2f} ms** with numpy's BLAS on one thread (as served) vs "
        f"{result['cpu_ms_blas_per_core']:.2f} ms with its default {result['blas_threads_default']} "
        f"threads ({ratio:.2f}x); {result['onnx_runs_per_batch']} ONNX Runtime run(s) per batch; "
        f"answer {result['answer_bytes']} bytes of JSON."
    )


def _load(url: str, scans: list[bytes], seconds: float, clients: int = 8) -> float:
    """Requests/s answered 200 with ``clients`` concurrent clients for ``seconds``."""
    import httpx

    headers = {"Content-Type": "application/octet-stream"}

    def worker(k: int) -> int:
        done, deadline = 0, time.monotonic() + seconds
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < deadline:
                response = client.post(url, content=scans[(k + done) % len(scans)], headers=headers)
                done += response.status_code == 200
        return done

    with ThreadPoolExecutor(clients) as pool:
        started = time.monotonic()
        done = sum(pool.map(worker, range(clients)))
    return done / (time.monotonic() - started)


def through_server(mar: Path, scans: list[bytes], seconds: float) -> dict[str, Any]:
    """Real TorchServe servers, log off/on/off/on; requests/s with 8 concurrent clients."""
    from serve.launcher import start_torchserve
    from serve.ports import free_port

    out: dict[str, float] = {}
    for mode in ("off", "on", "off2", "on2"):
        env = {"PREDLOG_ENABLED": "1" if mode.startswith("on") else "0"}
        with tempfile.TemporaryDirectory() as work:
            server = start_torchserve(
                mar,
                Path(work),
                env=env,
                inference_port=free_port(),
                management_port=free_port(),
                metrics_port=free_port(),
            )
            with server:
                _load(server.predict_url, scans, 5.0)  # warm-up
                out[mode] = round(_load(server.predict_url, scans, seconds), 1)
    on, off = (out["on"] + out["on2"]) / 2, (out["off"] + out["off2"]) / 2
    return {"requests_per_s": out, "cost": round(1 - on / off, 4), "seconds_per_run": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mar", type=Path, default=REPO / "model_store/brain_mri.mar")
    p.add_argument("--data", type=Path, default=REPO / "data/br35h")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--server", action="store_true", help="also through two real TorchServe servers")
    p.add_argument("--seconds", type=float, default=30.0, help="per server run")
    p.add_argument("--cpu", action="store_true", help="only the handler's CPU per request (bench-serve-cpu)")
    args = p.parse_args()
    scans = images(args.data, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.mar) as mar:
            mar.extractall(tmp)
        if args.cpu:
            cpu = cpu_per_request(tmp, scans, args.rounds, args.batch)
            print(cpu, flush=True)
            head = f"`make bench-serve-cpu` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            machine = f"{os.cpu_count()} vCPU; `{args.mar.name}` (version {read_meta(Path(tmp))['version']})."
            write_section("bench-serve-cpu", f"{head}{machine}\n\n{cpu_line(cpu)}")
            return 0
        result = in_process(tmp, scans, args.rounds, args.batch)
    print(f"in-process handler: {result}", flush=True)
    lines = [
        f"`make bench-predlog{' SERVER=1' if args.server else ''}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} vCPU; `{args.mar.name}`, {len(scans)} held-out scans, "
        f"batches of {args.batch}, median of {args.rounds} alternating rounds.",
        "",
        "| path | log off | log on | cost |",
        "|---|---|---|---|",
        f"| handler in-process, images/s | {result['images_per_s_log_off']:.1f} | "
        f"{result['images_per_s_log_on']:.1f} | {result['cost']:.1%} |",
    ]
    if args.server:
        served = through_server(args.mar, scans, args.seconds)
        print(f"TorchServe: {served}", flush=True)
        rps = served["requests_per_s"]
        lines.append(
            f"| real TorchServe, requests/s ({args.seconds:.0f} s per run, off/on/off/on) "
            f"| {rps['off']:.1f}, {rps['off2']:.1f} | {rps['on']:.1f}, {rps['on2']:.1f} "
            f"| {served['cost']:.1%} |"
        )
    write_section("bench-predlog", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
