"""CPU threads at inference: how many per serving worker, and one for numpy's small maths.

On a 2-vCPU serving machine every core is busy with a forward pass, JPEG decoding or the
JVM (measured in docs/benchmarks.md, "Serving"). Two rules keep them from fighting:

* :func:`threads_per_worker`: N workers share the cores out for ONNX Runtime (or torch),
  never oversubscribing;
* :func:`one_blas_thread`: the small maths after the forward pass (the OOD guard's
  Mahalanobis products, the log's PCA projection: numpy matrix products of a batch of 8)
  runs on the calling thread. numpy's OpenBLAS otherwise splits each product over one
  thread per core, and its idle threads busy-wait afterwards, stealing the cores from the
  next forward pass and the other worker: 2.5x the CPU per request, measured
  (docs/benchmarks.md, "Serving"). The torch-era core did the same with ``torch.set_num_threads(1)``
  around those ops.
"""

from __future__ import annotations

import os

#: numpy's BLAS threads in a serving process (:func:`one_blas_thread`).
BLAS_THREADS = 1


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


def one_blas_thread() -> None:
    """Run numpy's BLAS (OpenBLAS, MKL, BLIS: whichever is loaded) on :data:`BLAS_THREADS` thread from now on.

    For the whole process: call it in a process that serves (a TorchServe or LitServe
    worker), once, when it loads the model. The products it runs are a batch of 8 rows
    against a matrix of at most 1024 x 1024: too small to gain from a second thread.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
