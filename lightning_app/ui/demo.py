"""``python -m lightning_app.ui.demo``: TorchServe and the Gradio page together (``make demo``).

Starts TorchServe on the ``.mar`` (waiting until it serves a prediction), then the page
as a child process pointed at it, prints both URLs, and supervises them: Ctrl-C or
SIGTERM stops both (each in its own process group, so nothing is left behind), and if
either dies the other is stopped too. If this supervisor itself is killed (even by
SIGKILL), both children stop within seconds (:mod:`serve.lifeline` watchdogs), and when it
was started by ``uv run`` it stops when ``uv`` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

UI_START_TIMEOUT_S = 90.0


def wait_for_page(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until ``url`` answers 200; raise ``RuntimeError`` if the page exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo page exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the demo page did not answer at {url} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``process``, then SIGKILL it if it lingers."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn the first SIGINT/SIGTERM into ``KeyboardInterrupt``; ignore the ones that follow.

    Ctrl-C reaches this process twice (from the terminal and forwarded by ``uv run``), and a
    second interrupt must not cut the cleanup short.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.ui.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"), help="model archive")
    parser.add_argument("--inference-port", type=int, default=8080)
    parser.add_argument("--management-port", type=int, default=8081)
    parser.add_argument("--metrics-port", type=int, default=8082)
    parser.add_argument("--ui-port", type=int, default=7860)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run both services until interrupted; one-line errors, exit 2 when a service cannot start."""
    args = _parser().parse_args(argv)
    from serve.launcher import LaunchError, TorchServe, start_torchserve
    from serve.lifeline import Lifeline, exit_with_wrapper, spawn
    from serve.ports import port_in_use

    if port_in_use("127.0.0.1", args.ui_port):
        print(
            f"error: port {args.ui_port} is already in use (choose another with UI_PORT=...)", file=sys.stderr
        )
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # even where a parent shell ignored it
    watch = exit_with_wrapper(os.environ)
    workdir = Path(tempfile.mkdtemp(prefix="brain-mri-demo-"))
    server: TorchServe | None = None
    page: subprocess.Popen[bytes] | None = None
    page_line: Lifeline | None = None
    try:
        print(f"starting TorchServe on {args.mar} (work dir {workdir}, removed on exit) ...", flush=True)
        server = start_torchserve(
            args.mar,
            workdir,
            inference_port=args.inference_port,
            management_port=args.management_port,
            metrics_port=args.metrics_port,
            timeout=args.timeout,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "UI_HOST")}
        env.update(
            INFERENCE_URL=server.inference_url,
            MANAGEMENT_URL=server.management_url,
            MODEL_NAME=server.model_name,
            UI_PORT=str(args.ui_port),
        )
        page, page_line = spawn([sys.executable, "-m", "lightning_app.ui"], env=env)
        page_url = f"http://127.0.0.1:{args.ui_port}"
        wait_for_page(page_url, page, min(args.timeout, UI_START_TIMEOUT_S))
        print(
            f"\nTorchServe: {server.predict_url}  (ready in {server.started_in:.1f} s; management "
            f"{server.management_url})\nDemo page:  {page_url}\nCtrl-C stops both.\n",
            flush=True,
        )
        while page.poll() is None and server.process.poll() is None:
            time.sleep(0.5)
        who = "the demo page" if page.poll() is not None else "TorchServe"
        print(f"error: {who} stopped unexpectedly; stopping the other", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the demo page and TorchServe ...", flush=True)
        return 0
    except (LaunchError, RuntimeError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_process(page)
        if page_line is not None:
            page_line.cut()
        if watch is not None:
            watch.set()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
