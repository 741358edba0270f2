"""CPU threads at inference: how many per serving worker.

On a 2-vCPU serving machine every core is busy with a forward pass, JPEG decoding or the
JVM (measured in docs/benchmarks.md, "Serving"): :func:`threads_per_worker` shares the cores
out between N workers, never oversubscribing. (The small maths after the forward pass, the
OOD score and the log's PCA projection, is numpy: the torch-free core has no torch thread
pool to pin.)
"""

from __future__ import annotations

import os


def threads_per_worker(workers: int, requested: int | None = None) -> int:
    """Intra-op threads for one of ``workers`` serving processes on this machine's cores.

    ``requested`` (``SERVE_TORCH_THREADS``, read by
    :class:`~lightning_app.inference.settings.ServeSettings`) wins; otherwise the usable cores
    are shared out, at least one each, so that N workers never oversubscribe the CPU
    (docs/benchmarks.md, "Serving": 2 workers x 1 thread beat 1 worker x 2 threads on 2 vCPUs).
    """
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))
