"""How many intra-op threads each TorchServe worker takes (serve/model-config.yaml's workers)."""

from __future__ import annotations

import os

from lightning_app.inference.settings import ServeSettings
from lightning_app.inference.threads import threads_per_worker


def test_workers_share_the_cores_out_without_oversubscribing() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores
    assert threads_per_worker(2) == max(1, cores // 2)
    assert threads_per_worker(2) * 2 <= max(2, cores)
    assert threads_per_worker(cores * 4) == 1  # never zero threads


def test_serve_torch_threads_wins() -> None:
    assert ServeSettings.from_env({"SERVE_TORCH_THREADS": "3"}).threads(2) == 3
    assert threads_per_worker(2, 3) == 3
