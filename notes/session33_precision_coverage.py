"""Session-33 study (not shipped): does the calibration precision's stated line cover the true
error of simulated calibrations, with the rule's block length alone (before session 33) and
with the largest over the block band (session 33)? Same seeds, same resamples for both.

Scenarios (``tests/calibration/test_calibration_precision.py``'s ``simulate``):
A: 20 frames, 0.5 px on every dot, 0.1 deg / 0.2 mm tracker noise, independent frames.
B: 60 frames, 0.3 px, 0.2 deg / 0.3 mm tracker error drifting (lag-1 correlation 0.9).

``PYTHONPATH=. python notes/session33_precision_coverage.py A 20000 20300 OUT.jsonl``
``PYTHONPATH=. python notes/session33_precision_coverage.py B 20000 20100 OUT.jsonl``
Each line of OUT: seed, the rule's block length, max(true error / stated bound) over a 9 x 9
image grid for "old" and "new" (covered when <= 1), and the block lengths resampled.
Session 33: A 287/300 both; B 73/100 old, 80/100 new.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "calibration"))

SCENARIOS = {
    "A": {"frames": 20, "px": 0.5, "pose_deg": 0.1, "pose_mm": 0.2, "correlation": 0.0},
    "B": {"frames": 60, "px": 0.3, "pose_deg": 0.2, "pose_mm": 0.3, "correlation": 0.9},
}


def main(scenario: str, first: int, stop: int, out: Path) -> None:
    import _nwire_synth as synth
    from test_calibration_precision import IMAGE_SIZE, _image_grid, simulate

    from usnav.calibration.phantom import read_calibration_config
    from usnav.calibration.precision import (
        block_length,
        calibration_precision,
        residual_autocorrelation,
    )
    from usnav.calibration.spatial import solve_image_to_probe

    kw = SCENARIOS[scenario]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = read_calibration_config(synth.config_xml(Path(tmp) / "phantom.xml"))
    grid = _image_grid(*IMAGE_SIZE)
    with out.open("w") as f:
        for seed in range(first, stop):
            truth, image, probe = simulate(
                cfg,
                kw["frames"],
                kw["px"],
                seed,
                pose_deg=kw["pose_deg"],
                pose_mm=kw["pose_mm"],
                correlation=kw["correlation"],
            )
            fitted, _ = solve_image_to_probe(image, probe)
            error = np.linalg.norm((fitted @ grid - truth @ grid)[:3], axis=0)
            depth = grid[1] * np.linalg.norm(fitted[:3, 1])
            rule = block_length(residual_autocorrelation(fitted, image, probe), len(image))
            row: dict = {"seed": seed, "rule": rule}
            for name, block in (("old", rule), ("new", None)):
                p = calibration_precision(
                    fitted, image, probe, IMAGE_SIZE, block_frames=block, seed=seed
                )
                row[name] = float((error / p.bound_mm(depth)).max())
                row[name + "_band"] = list(p.block_lengths)
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for name in ("old", "new"):
        covered = sum(r[name] <= 1.0 for r in rows)
        print(f"{scenario} {name}: covered {covered} of {len(rows)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
