"""Session 44: the phantom definition against its mirror images on PLUS's fCal recordings.

Prints, for PLUS's fCal 1.2 definition and for it with every wire's x mirrored (x -> 70 - x),
the ratio PRE3D(as given) / PRE3D(mirror image) of usnav.calibration.mirror on the validation
recording (whole calibration recording, and 30/47/94-frame stretches of it, every 3rd start,
those the 1° skew limit accepts), at the recorded pairing and at +0.4 s.
Run: USNAV_TEST_DATA=/work/shared/data python notes/session44_mirror.py  (≈ 1 min).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from usnav.calibration.lag import at_tracker_lag
from usnav.calibration.mirror import _reflect, _to_probe, phantom_mirrors
from usnav.calibration.phantom import read_calibration_config
from usnav.calibration.spatial import (
    axes_skew_deg,
    percentile_stats,
    reprojection_errors_mm,
    segment_sequence,
    solve_image_to_probe,
)

PLUS = Path(os.environ.get("USNAV_TEST_DATA", "../shared/data")) / "plus"
CFG = PLUS / "ConfigFiles/Testing/PlusDeviceSet_fCal_Sim_SpatialCalibration_1.2.xml"
CAL = PLUS / "TestImages/fCal_Test_Calibration_3NWires.igs.mha"
VAL = PLUS / "TestImages/fCal_Test_Validation_3NWires.igs.mha"


def mirrored_x(path: Path) -> Path:
    def mirror(m: re.Match) -> str:
        x, y, z = (float(v) for v in m.group(2).split())
        return f'{m.group(1)}="{70.0 - x:g} {y:g} {z:g}"'

    path.write_text(re.sub(r'(EndPoint(?:Front|Back))="([^"]+)"', mirror, CFG.read_text()))
    return path


def pre3d(m, seq, points, idx):
    return percentile_stats(
        reprojection_errors_mm(m, seq.image_points[idx], _to_probe(seq, points, idx))
    ).mean


def ratios(cfg, cal, val, idx):
    """Skew of the given fit, and per mirror the ratio on the validation recording."""
    every = np.arange(len(val.used))
    given, _ = solve_image_to_probe(
        cal.image_points[idx], _to_probe(cal, cal.phantom_points[idx], idx)
    )
    out = {"skew": axes_skew_deg(given)}
    g = pre3d(given, val, val.phantom_points, every)
    for name, normal, centre in phantom_mirrors(cfg):
        pc = _reflect(cal.phantom_points[idx], normal, centre)
        fit, _ = solve_image_to_probe(cal.image_points[idx], _to_probe(cal, pc, idx))
        out[name] = g / pre3d(fit, val, _reflect(val.phantom_points, normal, centre), every)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in (("right", CFG), ("x mirrored", mirrored_x(Path(tmp) / "m.xml"))):
            cfg = read_calibration_config(path)
            cal0, val0 = segment_sequence(CAL, cfg), segment_sequence(VAL, cfg)
            for lag in (0.0, 0.4):
                cal, val = at_tracker_lag(cal0, lag), at_tracker_lag(val0, lag)
                n = len(cal.used)
                whole = ratios(cfg, cal, val, np.arange(n))
                print(
                    f"{label}, lag {lag}: whole recording "
                    + ", ".join(f"{k} {v:.2f}" for k, v in whole.items())
                )
                for length in (30, 47, 94):
                    rows = [
                        ratios(cfg, cal, val, np.arange(s, s + length))
                        for s in range(0, n - length + 1, 3)
                    ]
                    ok = [r for r in rows if r["skew"] <= 1.0]
                    across = [r["across the Ns"] for r in ok]
                    others = [max(r["along the wires"], r["across the patterns"]) for r in ok]
                    print(
                        f"  {length}-frame stretches: {len(ok)} of {len(rows)} within the skew "
                        f"limit; across the Ns {min(across):.2f}–{max(across):.2f}, the other "
                        f"mirrors at most {max(others):.2f}"
                    )


if __name__ == "__main__":
    main()
