"""CPU threads at inference: how many per serving worker, and one for small maths.

On a 2-vCPU serving machine every core is busy with a forward pass, JPEG decoding or the
JVM. Two rules keep them from fighting (measured in docs/benchmarks.md, "Serving" and
"Prediction-log cost"):

* :func:`threads_per_worker`: N TorchServe workers share the cores out, never oversubscribe;
* :func:`one_thread`: tensor maths of a few microseconds (the OOD score, the log's PCA
  projection) runs on one thread. A parallel region would leave spinning OpenMP threads
  behind that steal the cores from the next ONNX Runtime forward.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread; restore the count after.

    Without torch loaded (the torch-free serving core, numpy maths) there is nothing to change.
    """
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else 1
    if torch is None or threads == 1:  # nested or already single-threaded: nothing to change
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
