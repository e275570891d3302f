"""Session-26 live report (not shipped): ``usnav bench``'s display-state figures
(``bench_safety.bench_display_state``) on cases of the independent simulator
(notes/indep-sim, written without reading usnav/sim), replayed through the live pipeline.

Until session 26 the live pipeline had only been scored on usnav's own simulator; the outside
evaluator of #11 used cases nobody here had seen. Here every frame's truth mask is the
independent simulator's own: its planned tumor label seen through the frame's true pose
(``poses_TransducerToMri.npy`` · its image-to-transducer scaling), moved by its cord shift.

``python notes/session26_indep_live.py K WORK_DIR [FAMILY ...]``: seeds 5000 + 10·K + the
family's place in "base lowfreq hifreq speckle reverb shift" (notes/indep-sim/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "indep-sim"
FAMILIES = ("base", "lowfreq", "hifreq", "speckle", "reverb", "shift")


def _load_mat(path: Path) -> np.ndarray:
    values: list[float] = []
    for line in path.read_text().splitlines():
        values += [float(v) for v in line.split("#")[0].split()]
    return np.array(values).reshape(4, 4)


def _generate(folder: Path, family: str, seed: int) -> None:
    if (folder / "meta.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(HERE / "sim.py"), str(folder), family, str(seed)],
        check=True,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
    )


def _truth_masks(folder: Path) -> dict[int, np.ndarray]:
    """Frame number → the tumor where it is during surgery, on the frame's pixel grid."""
    import nibabel as nib
    from scipy import ndimage

    sys.path.insert(0, str(HERE))
    import sim as indep  # the independent simulator's own geometry

    from usnav.io.sequence_reader import read_sequence

    meta = json.loads((folder / "meta.json").read_text())
    shift = np.array(meta.get("cord_shift", [0.0, 0.0, 0.0]))
    label = nib.load(folder / "tumor_label.nii.gz")
    data = (np.asarray(label.dataobj) > 0).astype(np.float32)
    mri_to_voxel = np.linalg.inv(label.affine)
    poses = np.load(folder / "poses_TransducerToMri.npy")
    image_to_transducer = indep.image_to_transducer()
    rows, cols = indep.NROW, indep.NCOL
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pixels = np.stack([cc.ravel(), rr.ravel(), np.zeros(cc.size), np.ones(cc.size)])
    numbers = np.asarray(read_sequence(folder / "sweep.igs.mha").frame_numbers)
    assert len(numbers) == len(poses), (len(numbers), len(poses))
    masks = {}
    for number, pose in zip(numbers, poses, strict=True):
        mri = pose @ image_to_transducer @ pixels
        mri[:3] -= shift[:, None]  # the surgical tumor is the planned one moved by the shift
        voxel = mri_to_voxel @ mri
        inside = ndimage.map_coordinates(data, voxel[:3], order=1, mode="constant")
        masks[int(number)] = inside.reshape(rows, cols) >= 0.5
    return masks


class _IndepTruth:
    """``load_truth(folder).mtre(T)``: the independent simulator's score (mean error over the
    tumor surface against where the tumor is during surgery)."""

    def __init__(self, folder: Path):
        sys.path.insert(0, str(HERE))
        import anatomy
        import nibabel as nib

        self.truth = _load_mat(folder / "truth.txt")
        shift = np.array(json.loads((folder / "meta.json").read_text()).get("cord_shift", [0] * 3))
        move = np.eye(4)
        move[:3, 3] = -shift
        self.truth = move @ self.truth
        label = nib.load(folder / "tumor_label.nii.gz")
        self._points = anatomy.tumor_surface_points(np.asarray(label.dataobj), label.affine)

    def points(self) -> np.ndarray:
        return self._points

    def mtre(self, reference_to_mri: np.ndarray) -> float:
        m = reference_to_mri @ np.linalg.inv(self.truth)
        q = self._points @ m[:3, :3].T + m[:3, 3]
        return float(np.linalg.norm(q - self._points, axis=1).mean())


def _log_estimates(truth_of: dict) -> None:
    """Print every estimate the live worker makes, with its error against the truth."""
    from usnav.registration import worker as W

    original = W.RegistrationWorker._update

    def logged(self, window, t0, stacked):
        before = self.latest_accepted().reference_to_mri
        estimate = original(self, window, t0, stacked)
        if estimate is not None and "truth" in truth_of:
            truth = truth_of["truth"]
            in_use = self.latest_accepted()
            points = truth.points()
            step = estimate.reference_to_mri @ np.linalg.inv(before)
            moved = points @ step[:3, :3].T + step[:3, 3] - points
            apart = float(np.linalg.norm(moved, axis=1).mean())
            print(
                f"  estimate {estimate.sequence}: {len(window)} frames, "
                f"{'accepted' if estimate.accepted else 'rejected'} "
                f"{truth.mtre(estimate.reference_to_mri):.2f} mm "
                f"(bound {estimate.uncertainty_mm}), {apart:.2f} mm from the one before; "
                f"in use {truth.mtre(in_use.reference_to_mri):.2f} mm; {estimate.reason[:160]}",
                flush=True,
            )
        return estimate

    W.RegistrationWorker._update = logged


def _usnav_cases(work: Path, cases: tuple[str, ...]) -> None:
    """The same live run and estimate log on usnav's own simulator (seed:family ...)."""
    from usnav.bench import bench_safety
    from usnav.bench.registry import BenchContext
    from usnav.sim import load_truth

    ctx = BenchContext(full=False, work_dir=work, progress=print)
    truth_of: dict = {}
    _log_estimates(truth_of)
    simulate = bench_safety._simulate

    def simulated(seed, family, folder, frames):
        out = simulate(seed, family, folder, frames)
        truth_of["truth"] = load_truth(out[0])
        return out

    bench_safety._simulate = simulated
    runs = []
    for case in cases:
        seed, family = case.split(":")
        run = bench_safety._run_case(ctx, int(seed), family, 120)
        runs.append(run)
        rows = run.in_view
        print(
            json.dumps(
                {
                    "case": case,
                    "mean": float(np.mean([r[3] for r in rows])) if rows else None,
                    "mri_only": float(np.mean([r[4] for r in rows])) if rows else None,
                    "checked": [
                        round(float(np.mean(v)), 3) if v else None
                        for v in (
                            [r[3] for r in rows if r[8].header.registration_checked],
                            [r[4] for r in rows if r[8].header.registration_checked],
                        )
                    ],
                    "final_mm": run.final_tre_mm,
                    "estimates": run.estimates,
                    "adopted": run.adopted,
                }
            ),
            flush=True,
        )
    ctx._display_runs = runs  # type: ignore[attr-defined]
    for figure in bench_safety.bench_display_state(ctx):
        print(f"{figure.name}: {figure.value} {figure.unit}; {figure.note}", flush=True)


def main(k: str, work_dir: str, *families: str) -> None:
    import usnav.sim
    from usnav.bench import bench_pipeline, bench_safety
    from usnav.bench.registry import BenchContext

    work = Path(work_dir)
    if k == "usnav":  # usnav's own simulator: usnav SEED:FAMILY ... (bench_safety's cases)
        _usnav_cases(work, families)
        return
    families = families or FAMILIES
    _usnav_pipeline = bench_pipeline.case_pipeline
    bench_pipeline.case_pipeline = lambda case, port, options: _usnav_pipeline(
        case, port, options, calibration_file="cal.txt", initial_file="init.txt"
    )
    usnav.sim.load_truth = _IndepTruth
    ctx = BenchContext(full=False, work_dir=work, progress=print)
    truth_of: dict = {}
    _log_estimates(truth_of)
    runs = []
    for family in families:
        seed = 5000 + 10 * int(k) + FAMILIES.index(family) + 1
        folder = work / f"{family}_{seed}"
        print(f"generating {folder}", flush=True)
        _generate(folder, family, seed)
        masks = _truth_masks(folder)
        truth_of["truth"] = _IndepTruth(folder)
        run = bench_safety._run_case(ctx, seed, family, len(masks), files=(folder, masks))
        runs.append(run)
        rows = run.in_view
        print(
            json.dumps(
                {
                    "case": folder.name,
                    "in_view": len(rows),
                    "mean": float(np.mean([r[3] for r in rows])) if rows else None,
                    "mri_only": float(np.mean([r[4] for r in rows])) if rows else None,
                    "live_bad": sum(1 for r in rows if r[1] == "LIVE" and r[2] > 2.0),
                    "states": {s: sum(r[1] == s for r in rows) for s in ("LIVE", "UNCERTAIN")},
                    "final_mm": run.final_tre_mm,
                    "init_mm": _IndepTruth(folder).mtre(_load_mat(folder / "init.txt")),
                    "estimates": run.estimates,
                    "adopted": run.adopted,
                }
            ),
            flush=True,
        )
    ctx._display_runs = runs  # type: ignore[attr-defined]
    for figure in bench_safety.bench_display_state(ctx):
        print(
            f"{figure.name}: {figure.value} {figure.unit} (target {figure.target}); "
            f"baseline {figure.baseline_name} {figure.baseline_value}; {figure.note}",
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
