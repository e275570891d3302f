"""Session 44: how often the stated per-point precision covers a short calibration's error.

Calibrates stretches of PLUS's fCal calibration recording (contiguous 30 / 60 / 94 frames,
every 2nd start, and 60 random 30-frame samples, seed 9100) with the library's
calibration_precision (200 resamples), and counts how often each named point's stated bound
covers its distance from the whole recording's calibration at the same pairing (at lag 0 that
is PLUS's expected answer to 0.0001 mm), without and with the validation recording, at the
recorded pairing and at +0.4 s. Stretches the 1° skew limit refuses are left out.
Run: USNAV_TEST_DATA=/work/shared/data python notes/session44_precision_coverage.py (≈ 8 min).
"""

from __future__ import annotations

import numpy as np
from session44_mirror import CAL, CFG, VAL  # the same PLUS files (notes/ is on the path)

from usnav.calibration.lag import at_tracker_lag
from usnav.calibration.phantom import read_calibration_config
from usnav.calibration.precision import NAMED_POINTS, calibration_precision
from usnav.calibration.spatial import (
    MAX_SKEW_DEG,
    axes_skew_deg,
    percentile_stats,
    reprojection_errors_mm,
    segment_sequence,
    solve_image_to_probe,
)


def main() -> None:
    cfg = read_calibration_config(CFG)
    cal0, val0 = segment_sequence(CAL, cfg), segment_sequence(VAL, cfg)
    for length, mode in (
        (30, "contiguous"),
        (60, "contiguous"),
        (94, "contiguous"),
        (30, "random"),
    ):
        for lag in (0.0, 0.4):
            cal, val = at_tracker_lag(cal0, lag), at_tracker_lag(val0, lag)
            whole, _ = solve_image_to_probe(cal.image_points, cal.probe_points)
            cols, rows = cal.image_size
            named = np.array(
                [[fu * (cols - 1), fv * (rows - 1), 0.0, 1.0] for fu, fv in NAMED_POINTS.values()]
            ).T
            n = len(cal.used)
            rng = np.random.default_rng(9100)
            if mode == "contiguous":
                subsets = [np.arange(s, s + length) for s in range(0, n - length + 1, 2)]
            else:
                subsets = [np.sort(rng.choice(n, length, replace=False)) for _ in range(60)]
            for with_val in (False, True):
                covered, flagged = [], 0
                for idx in subsets:
                    uv, pr = cal.image_points[idx], cal.probe_points[idx]
                    m, _ = solve_image_to_probe(uv, pr)
                    if axes_skew_deg(m) > MAX_SKEW_DEG:
                        continue
                    v = None
                    if with_val:
                        errors = reprojection_errors_mm(m, val.image_points, val.probe_points)
                        v = percentile_stats(errors).mean
                    p = calibration_precision(
                        m, uv, pr, cal.image_size, replicates=200, validation_pre3d_mm=v
                    )
                    error = np.linalg.norm((m @ named - whole @ named)[:3], axis=0)
                    covered.append(error <= np.array([p.points_mm[k] for k in NAMED_POINTS]))
                    flagged += p.too_few_frames
                share = " / ".join(f"{c:.0%}" for c in np.mean(covered, axis=0))
                print(
                    f"{length} {mode}, lag {lag}, {'with' if with_val else 'no'} validation: "
                    f"{len(covered)} calibrations; covered at {', '.join(NAMED_POINTS)}: "
                    f"{share}; flagged too few frames: {flagged}"
                )


if __name__ == "__main__":
    main()
