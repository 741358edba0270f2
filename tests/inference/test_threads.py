"""How many threads a serving worker takes: intra-op per worker, and one for numpy's maths.

Real pieces: a small CNN exported as the export writes it, loaded by the serving core, and
the BLAS library numpy really loaded (read through ``threadpoolctl``).
"""

from __future__ import annotations

import os
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

from lightning_app.inference.service import ModelService
from lightning_app.inference.settings import ServeSettings
from lightning_app.inference.threads import threads_per_worker
from tests.inference.model_dirs import write_model_dir


def test_workers_share_the_cores_out_without_oversubscribing() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores
    assert threads_per_worker(2) == max(1, cores // 2)
    assert threads_per_worker(2) * 2 <= max(2, cores)
    assert threads_per_worker(cores * 4) == 1  # never zero threads


def test_serve_torch_threads_wins() -> None:
    assert ServeSettings.from_env({"SERVE_TORCH_THREADS": "3"}).threads(2) == 3
    assert threads_per_worker(2, 3) == 3


def test_a_loaded_service_runs_numpy_products_on_one_thread(tmp_path: Path) -> None:
    """The OOD and log maths must not leave BLAS threads spinning on the workers' cores."""
    with threadpool_limits(limits=2, user_api="blas"):  # numpy's default on 2 cores; restored after
        ModelService().load(write_model_dir(tmp_path), ServeSettings())
        blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
        assert blas, "numpy loaded no BLAS library?"
        assert [info["num_threads"] for info in blas] == [1] * len(blas)
