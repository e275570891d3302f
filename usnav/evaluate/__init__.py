"""Batch evaluation of datasets: ``usnav evaluate`` (registration and offline margins of every
case of a manifest as Dask tasks), ``usnav margins`` (a recording's per-frame margins to a file)
and RESECT Case 24 sweeps written as a dataset. See ``docs/evaluation.md``.

Nothing in the live pipeline imports this package; Dask is imported only by
:mod:`usnav.evaluate.runner`, when a run starts (the ``evaluate`` extra).
"""
