"""Session-25 live report (not shipped): ``usnav bench``'s display-state figures
(``bench_safety``) on six fresh held-out seeds, with margins drawn across the sweep after a
try rejected as ambiguous along it (the default) or without (``off``: the navigation
registration itself, as before session 25).

``python notes/session25_live.py FIRST_SEED on|off WORK_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(first_seed: str, mode: str, work_dir: str) -> None:
    from pydantic import StrictBool

    from usnav.bench import bench_safety as S
    from usnav.bench.registry import BenchContext
    from usnav.registration import worker as W

    if mode == "off":

        class Off(W.WorkerOptions):
            margins_across_sweep: StrictBool = False

        W.WorkerOptions = Off  # the pipeline imports it when it builds its worker
    base = int(first_seed)
    S.FULL_CASES = tuple((base + i, look) for i, (_, look) in enumerate(S.FULL_CASES))
    ctx = BenchContext(full=True, work_dir=Path(work_dir), progress=print)
    for figure in S.bench_display_state(ctx):
        print(
            f"{figure.name}: {figure.value} {figure.unit} (target {figure.target}); "
            f"baseline {figure.baseline_name} {figure.baseline_value}; {figure.note}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
