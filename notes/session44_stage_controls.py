"""Session 44: where does the tumor stage's 0.6 come from?  Control experiments on tuning set A
only (notes/session-44-stage.md).  Nothing in usnav/ is changed; the stage's own
``_fit_member`` (the same ROI, basis, grid start and Nelder-Mead) is run from each accepted
case's bony estimate B on frames whose *content* is replaced:

- ``real``: the recorded (simulated) ultrasound, as shipped;
- ``e0``: the stage's own MRI level sampled at T(t*) · B · pixel: the preoperative MRI moved
  rigidly by the needed move t* (same modality, rigid content; the right answer is t* exactly);
- ``e1``: the *intraoperative* labels (the simulator's warped anatomy, rebuilt from the seed)
  rendered with the simulator's MRI appearance (``simulate_mri``, its own noise/texture/bias
  stream, seed [9144, seed]) and sampled at each frame's *true* ImageToMri: an MRI-like image of
  exactly the tissue the ultrasound was simulated from;
- ``e1pre``: the same renderer on the *preoperative* labels (no cord shift) at the true poses:
  the rendering's own bias (its needed move is t_pre = mean(X - B · inv(T) · X), not t*);
- ``e2``: the real ultrasound with the ROI restricted to pixels at least (patch_half + 1)
  pixels inside the plan's cord (preoperative labels through B): no patch sees static tissue on
  the plan side; ``e2t`` in addition inside the *intraoperative* cord at the true pose by the
  same depth (truth-side, a diagnostic only);
- ``e3``: no fit: the mean over the ROI's pixels of the per-pixel needed move
  X(q) - B · q (X = the preoperative point the pixel shows, through the simulator's inverse
  warp), uniform and weighted by the gradient magnitude of the e1 frames and of the ultrasound.

Every move t is reported as its component along the needed in-plane move t*⊥ over ‖t*⊥‖.

    python notes/session44_stage_controls.py CASES_DIR RESULTS_DIR OUT.csv [MAX_CASES]
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session42_tumor_stage import needed_translation

import usnav.registration.tumor as T
from usnav.config.calibration import load_calibration
from usnav.evaluate.truth import load_scorer
from usnav.io.volume import Volume, load_volume
from usnav.registration import _kernels as K
from usnav.registration.options import RegistrationOptions
from usnav.registration.search import SweepRegistration
from usnav.registration.similarity import FrameLevel, prepare_frame_level, set_threads
from usnav.registration.sweep import load_sweep
from usnav.sim.anatomy import _MOVES_WITH_CORD
from usnav.sim.case import build_case
from usnav.sim.mri import simulate_mri
from usnav.sim.options import make_options
from usnav.sim.truth import TUMOR_LANDMARKS

RENDER_SEED = 9144  # the e1 renderer's own random stream (not a case seed)


def _pixels(frames: FrameLevel) -> np.ndarray:
    """(4, rows·cols) homogeneous level pixel positions (col, row, 0, 1)."""
    _, rows, cols = frames.us.shape
    r, c = np.mgrid[0:rows, 0:cols]
    return np.stack([c.ravel(), r.ravel(), np.zeros(r.size), np.ones(r.size)]).astype(float)


def sample_frames(
    data: np.ndarray, pixel_to_voxel: np.ndarray, frames: FrameLevel, order: int = 1
) -> np.ndarray:
    """(F, rows, cols) float32: ``data`` (trilinear) at every level pixel of every frame, through
    ``pixel_to_voxel`` (F, 4, 4) level pixel → voxel index (``order`` 0: nearest)."""
    n, rows, cols = frames.us.shape
    pix = _pixels(frames)
    out = np.empty((n, rows, cols), np.float32)
    for f in range(n):
        vox = (pixel_to_voxel[f] @ pix)[:3]
        out[f] = ndimage.map_coordinates(data, vox, order=order, mode="nearest").reshape(rows, cols)
    return out


def with_content(frames: FrameLevel, us: np.ndarray) -> FrameLevel:
    """``frames`` with its intensities (and their gradient magnitude) replaced by ``us``."""
    grad = np.empty_like(us)
    col_mm = float(np.linalg.norm(frames.pixel_to_reference[0, :3, 0]))
    row_mm = float(np.linalg.norm(frames.pixel_to_reference[0, :3, 1]))
    for f in range(len(us)):
        K.gradient_magnitude_2d(us[f], row_mm, col_mm, grad[f])
    return FrameLevel(
        frames.spacing_mm, us, grad, frames.valid, frames.pixel_to_reference, frames.frame_index
    )


def with_valid(frames: FrameLevel, keep: np.ndarray) -> FrameLevel:
    """``frames`` with its valid pixels restricted to ``keep``."""
    valid = (frames.valid > 0) & keep
    return FrameLevel(
        frames.spacing_mm,
        frames.us,
        frames.us_grad,
        valid.astype(np.uint8),
        frames.pixel_to_reference,
        frames.frame_index,
    )


def _translated(start: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m @ start


def depth_volume(labels: Volume) -> Volume:
    """Minus the depth (mm) of every voxel inside the cord and what it carries (0 outside):
    ``roi_masks(frames, depth_volume(v), pose, -d)`` keeps pixels at least d mm inside."""
    inside = np.isin(np.asarray(labels.data), _MOVES_WITH_CORD)
    depth = ndimage.distance_transform_edt(inside, sampling=labels.spacing_mm)
    return Volume(np.ascontiguousarray(-depth, np.float32), labels.affine, source="cord depth")


@dataclass
class Case:
    """One accepted tuning case loaded as the stage sees it (and its truth)."""

    scorer: object
    sim: object
    doc: dict
    bony: np.ndarray
    t_star: np.ndarray
    t_star_fit: np.ndarray  # t*⊥: t* projected on the stage's fitted plane
    proj: np.ndarray
    sweep: object
    context: T.TumorContext
    frames: FrameLevel


def load_case(cd: Path, res: dict, opts: RegistrationOptions) -> Case:
    """The case's MRI level, frames and bony estimate as ``refine_at_tumor`` builds them."""
    scorer = load_scorer(cd / "truth.json")
    sim = scorer.sim
    doc = json.loads((cd / "truth.json").read_text(encoding="utf-8"))
    bony = np.asarray(res["BonyReferenceToMri"], float)
    t_star = needed_translation(sim, bony)
    distance = T.tumor_distance_map(load_volume(cd / "tumor_label.nii.gz"))
    cal = load_calibration(cd / "calibration.toml", warn=False)
    sweep = load_sweep(cd / "sweep.igs.mha", cal)
    problem = SweepRegistration(load_volume(cd / "mri.nii.gz"), sweep, bony, opts)
    context = T.TumorContext(distance, problem.level(-1).mri)
    basis = context.translation_basis(opts)
    proj = basis @ basis.T
    frames = prepare_frame_level(
        sweep,
        context.mri_level.spacing_mm,
        max_frames=opts.tumor_max_frames,
        **opts.frame_mask_arguments(),
    )
    return Case(scorer, sim, doc, bony, t_star, proj @ t_star, proj, sweep, context, frames)


def true_pixel_to_mri(c: Case):
    """(the simulator's rebuilt case, (F, 4, 4) level pixel → MRI mm through each frame's
    *true* ImageToMri)."""
    built = build_case(int(c.doc["seed"]), make_options(**c.doc["options"]))
    true_i2m = built.sweep.true_image_to_mri[c.frames.frame_index]
    level_to_image = np.linalg.inv(c.sweep.image_to_reference[c.frames.frame_index])
    return built, true_i2m @ level_to_image @ c.frames.pixel_to_reference


def render(built, grid, true_p2m: np.ndarray, frames: FrameLevel) -> FrameLevel:
    """``frames`` showing the label grid ``grid`` with the simulator's MRI appearance (its own
    random stream) at the true poses."""
    rng = np.random.default_rng([RENDER_SEED, int(built.seed)])
    spacing = tuple(built.options.mri_spacing_mm)
    vol = simulate_mri(built.anatomy, grid, rng, spacing).mri
    data = np.asarray(vol.data, np.float32)
    return with_content(frames, sample_frames(data, vol.world_to_voxel @ true_p2m, frames))


def render_intraop(cd: Path, c: Case) -> FrameLevel:
    """The E1 frames of the case."""
    built, true_p2m = true_pixel_to_mri(c)
    return render(built, built.intraop, true_p2m, c.frames)


def case_row(cd: Path, res: dict, opts: RegistrationOptions, metrics: list[str]) -> dict:
    """Every experiment on one accepted case."""
    t_start = time.perf_counter()
    c = load_case(cd, res, opts)
    scorer, sim, bony, t_star, frames = c.scorer, c.sim, c.bony, c.t_star, c.frames
    context, proj, ts, distance = c.context, c.proj, c.t_star_fit, c.context.distance
    need = float(np.linalg.norm(ts))
    row: dict = {"case": cd.name, "need_mm": need, "bony_now": scorer.error_now_mm(bony)}

    def fit(tag: str, fr: FrameLevel, metric: str = "lc2", target: np.ndarray = ts) -> None:
        m = T._fit_member(fr, context, bony, opts, metric, opts.tumor_roi_mm, opts.tumor_patch_half)
        t = m.translation_mm
        row[f"{tag}_ratio"] = float(t @ target / max(target @ target, 1e-12))
        row[f"{tag}_miss"] = float(np.linalg.norm(t - target))
        row[f"{tag}_now"] = scorer.error_now_mm(_translated(bony, t if m.applied else 0 * t))
        row[f"{tag}_frames"] = m.frames

    fit("real", frames)

    # E0: the stage's own MRI level, moved rigidly by t*
    level = context.mri_level
    to_vox = level.world_to_voxel @ _translated(bony, t_star)
    mri0 = np.ascontiguousarray(level.vol2[..., 0])
    e0 = with_content(frames, sample_frames(mri0, to_vox @ frames.pixel_to_reference, frames))
    for metric in metrics:
        fit(f"e0_{metric}", e0, metric)

    # E1: the intraoperative anatomy with the simulator's MRI appearance, at the true poses
    built, true_p2m = true_pixel_to_mri(c)
    track = sim.reference_to_mri @ frames.pixel_to_reference
    row["pose_check_mm"] = float(np.abs(track[:, :3, 3] - true_p2m[:, :3, 3]).max())
    renders = {
        "e1": render(built, built.intraop, true_p2m, frames),
        "e1pre": render(built, built.preop, true_p2m, frames),
    }
    for metric in metrics:
        fit(f"e1_{metric}", renders["e1"], metric)
    pre = sim.points(TUMOR_LANDMARKS)
    m = bony @ np.linalg.inv(sim.reference_to_mri)
    t_pre = proj @ (pre - (pre @ m[:3, :3].T + m[:3, 3])).mean(axis=0)
    row["need_pre_mm"] = float(np.linalg.norm(t_pre))
    fit("e1pre", renders["e1pre"], "lc2", t_pre)

    # E2: the ROI inside the plan's cord (and the intraoperative cord) by the patch + 1 px
    d_min = (opts.tumor_patch_half + 1) * frames.spacing_mm
    plan = load_volume(cd / "anatomy_preop.nii.gz")
    inside_plan = T.roi_masks(frames, depth_volume(plan), bony, -d_min) > 0
    intra = load_volume(cd / "anatomy_intraop.nii.gz")
    inside_now = T.roi_masks(frames, depth_volume(intra), sim.reference_to_mri, -d_min) > 0
    roi = T.roi_masks(frames, distance, bony, opts.tumor_roi_mm) > 0
    row["e2_kept"] = float(np.sum(roi & inside_plan) / max(1, np.sum(roi)))
    row["e2t_kept"] = float(np.sum(roi & inside_plan & inside_now) / max(1, np.sum(roi)))
    fit("e2", with_valid(frames, inside_plan))
    fit("e2t", with_valid(frames, inside_plan & inside_now))

    # E3: the per-pixel needed move over the ROI's pixels (no fit)
    anat = built.anatomy
    spine_from_mri = np.linalg.inv(anat.spine_to_mri)
    pix = _pixels(frames)
    in_tumor = T.roi_masks(frames, distance, bony, 0.0) > 0
    moves, weights = [], {"uniform": [], "e1_grad": [], "us_grad": [], "tumor": [], "shell": []}
    shift_w = []
    for f in range(len(frames)):
        sel = roi[f].ravel()
        if sel.sum() < opts.tumor_min_pixels:
            continue
        y = (true_p2m[f] @ pix[:, sel])[:3].T  # intraoperative point shown, MRI mm
        x_spine = anat.inverse_warp((y @ spine_from_mri[:3, :3].T) + spine_from_mri[:3, 3])
        x = x_spine @ anat.spine_to_mri[:3, :3].T + anat.spine_to_mri[:3, 3]
        q = ((bony @ frames.pixel_to_reference[f]) @ pix[:, sel])[:3].T
        moves.append(x - q)
        shift_w.append(anat.shift_weight(anat.straighten(x_spine)))
        weights["tumor"].append(in_tumor[f].ravel()[sel].astype(float))
        weights["shell"].append(1.0 - in_tumor[f].ravel()[sel])
        weights["uniform"].append(np.ones(int(sel.sum())))
        weights["e1_grad"].append(renders["e1"].us_grad[f].ravel()[sel])
        weights["us_grad"].append(frames.us_grad[f].ravel()[sel])
    d = np.concatenate(moves)
    for name, w in weights.items():
        w = np.concatenate(w)
        mean = proj @ (w @ d / w.sum())
        row[f"e3_{name}_ratio"] = float(mean @ ts / (ts @ ts))
    # the simulator's shift weight (0..1) at the tumor's landmarks and over the ROI's pixels
    marks = sim.points(TUMOR_LANDMARKS) @ spine_from_mri[:3, :3].T + spine_from_mri[:3, 3]
    row["w_landmarks"] = float(anat.shift_weight(anat.straighten(marks)).mean())
    row["w_roi"] = float(np.concatenate(shift_w).mean())
    row["seconds"] = time.perf_counter() - t_start
    return row


def write_rows(rows: list[dict], out: str) -> None:
    """``rows`` as a CSV at ``out``."""
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_cases(
    case_rows, cases: str, results: str, controls: str, out: str, max_cases: int = 0, **kw
) -> list[dict]:
    """``case_rows(case_dir, result, options, **kw)`` (a list of rows) for the first
    ``max_cases`` (all if 0) cases of ``controls`` (this script's CSV: largest needed move
    first), the CSV at ``out`` rewritten after each case."""
    set_threads(1)
    opts = RegistrationOptions()
    with open(controls, encoding="utf-8") as f:
        names = [r["case"] for r in csv.DictReader(f)]
    rows: list[dict] = []
    for name in names[: max_cases or None]:
        res = json.loads(Path(results, "cases", name, "result.json").read_text(encoding="utf-8"))
        rows += case_rows(Path(cases) / name, res, opts, **kw)
        write_rows(rows, out)
    return rows


def main(cases: str, results: str, out: str, max_cases: int = 0) -> None:
    set_threads(1)
    opts = RegistrationOptions()
    metrics = ["lc2", "ncc_gradient"]
    chosen = []
    for rp in sorted(Path(results, "cases").glob("*/result.json")):
        res = json.loads(rp.read_text(encoding="utf-8"))
        if not res.get("accepted"):
            continue
        cd = Path(cases) / rp.parent.name
        sim = load_scorer(cd / "truth.json").sim
        t_star = needed_translation(sim, np.asarray(res["BonyReferenceToMri"], float))
        ctx = T.TumorContext(T.tumor_distance_map(load_volume(cd / "tumor_label.nii.gz")), None)
        basis = ctx.translation_basis(opts)
        need = float(np.linalg.norm(basis @ basis.T @ t_star))
        if need > 0.5:
            chosen.append((need, cd, res))
    chosen.sort(key=lambda c: -c[0])
    if max_cases:
        chosen = chosen[:max_cases]
    rows = []
    for _, cd, res in chosen:
        row = case_row(cd, res, opts, metrics)
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        write_rows(rows, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
