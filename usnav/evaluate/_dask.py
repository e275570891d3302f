"""The Dask side of ``usnav evaluate`` that must import ``distributed`` at module level (the
worker plugin class is pickled by reference, so it lives in an importable module). Imported
only by :mod:`usnav.evaluate.runner` once a run starts."""

from __future__ import annotations

import time

from distributed import WorkerPlugin


class UsnavWarmUp(WorkerPlugin):
    """Load (or compile) usnav's registration and margin kernels once per worker process.

    Set up when the plugin is registered and on every worker that joins later (a restarted
    one included); the seconds it took are kept on the worker (``usnav_warm_up_s``).
    """

    name = "usnav-warm-up"
    idempotent = True

    def setup(self, worker) -> None:
        from usnav.margins import _kernels as margin_kernels
        from usnav.registration import warm_up

        t0 = time.perf_counter()
        warm_up()
        margin_kernels.warm_up()
        worker.usnav_warm_up_s = time.perf_counter() - t0


def warm_up_seconds(dask_worker) -> float:
    """For ``client.run``: this worker's warm-up seconds (NaN if the plugin did not run)."""
    return float(getattr(dask_worker, "usnav_warm_up_s", float("nan")))
