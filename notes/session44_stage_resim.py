"""Session 44 ("E5"): the tumor stage on ultrasound re-simulated from the case's seed with one
thing of the simulator changed (tuning set A only; notes/session-44-stage.md).

For each case (the CSV of notes/session44_stage_controls.py, the MAX_CASES largest needed moves)
the frames the stage uses are simulated again at their true poses (the simulator rebuilt from
the seed and options; the recorded images' other frames are untouched) and the stage's own
``_fit_member`` is run from the bony estimate:

- ``same``: the simulator as built (must give back the recorded images and the stage's move);
- ``nospeckle``: every tissue's backscatter 0: interface echoes only, no speckle or texture;
- ``rigid``: the cord shift without its taper across the canal (shift weight 1 everywhere in
  the sac, the same taper along the cord): the cord moves as one body; its needed move t*
  recomputed with that field;
- ``rigid_nospeckle``: both;
- with ``dura`` as the 6th argument: ``rigid`` and ``rigid_nodura``, the rigid field with the
  dura acoustically CSF (every table entry; no dura echo, no static interface at the sac);
- with ``deep``: the rigid field's ultrasound and E1 frames, the ROI also restricted to the
  deep cord (plan and intraoperative; :func:`deep_rows`);
- with ``e1`` as the 6th argument instead: no ultrasound, the E1 frames (notes/
  session44_stage_controls.py) of the shipped (``e1``) and of the rigid field (``e1_rigid``).

    python notes/session44_stage_resim.py CASES_DIR RESULTS_DIR CONTROLS.csv OUT.csv [MAX_CASES]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session44_stage_controls import (
    _translated,
    depth_volume,
    load_case,
    render,
    run_cases,
    true_pixel_to_mri,
    with_valid,
)

import usnav.registration.tumor as T
from usnav.io.volume import Volume, load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.similarity import prepare_frame_level
from usnav.sim.anatomy import intraoperative
from usnav.sim.tissues import AcousticTables, Tissue
from usnav.sim.truth import TUMOR_LANDMARKS
from usnav.sim.ultrasound import UltrasoundSimulator


def rigid_needed(c, anat) -> np.ndarray:
    """t* under the rigid field: the mean over the tumor landmarks of X - B · inv(T) · Y with
    Y = X + u(X) (u from ``anat``, whose shift weight is patched)."""
    x = c.sim.points(TUMOR_LANDMARKS)
    to_spine = np.linalg.inv(anat.spine_to_mri)
    xs = x @ to_spine[:3, :3].T + to_spine[:3, 3]
    y = (xs + anat.displacement(xs)) @ anat.spine_to_mri[:3, :3].T + anat.spine_to_mri[:3, 3]
    m = c.bony @ np.linalg.inv(c.sim.reference_to_mri)
    return (x - (y @ m[:3, :3].T + m[:3, 3])).mean(axis=0)


def without_dura(tables: AcousticTables) -> AcousticTables:
    """``tables`` with the dura's every entry that of CSF."""
    out = {}
    for f in dataclasses.fields(tables):
        column = np.array(getattr(tables, f.name), copy=True)
        column[Tissue.DURA] = column[Tissue.CSF]
        out[f.name] = column
    return AcousticTables(**out)


def simulator_like(sim: UltrasoundSimulator, anatomy=None, speckle: bool = True, dura=True):
    """A copy of ``sim`` on ``anatomy`` (default its own), without scattering if not
    ``speckle``, with the dura acoustically CSF if not ``dura``."""
    out = UltrasoundSimulator(
        anatomy if anatomy is not None else sim.anatomy,
        sim.texture,
        sim.texture_origin,
        sim.texture_spacing,
        sim.tables if dura else without_dura(sim.tables),
        sim.geometry,
        sim.settings,
        sim.seed,
    )
    if not speckle:
        out.backscatter = np.zeros_like(out.backscatter)
    return out


def resimulated(c, built, us_sim: UltrasoundSimulator, opts: RegistrationOptions):
    """(the stage's frames with the case's chosen frames simulated by ``us_sim`` at their
    true poses, the mean |difference| from the recorded images)."""
    index = c.frames.frame_index
    images = np.array(c.sweep.images, copy=True)
    for i in index:
        images[i] = us_sim.frame(built.sweep.image_poses[i], int(i))
    diff = float(np.abs(images[index].astype(float) - c.sweep.images[index]).mean())
    sweep = dataclasses.replace(c.sweep, images=images)
    frames = prepare_frame_level(
        sweep, c.context.mri_level.spacing_mm, frame_index=index, **opts.frame_mask_arguments()
    )
    return frames, diff


def deep_rows(cd: Path, c, built, true_p2m, rigid_intra, t_rigid, opts) -> list[dict]:
    """``deep`` mode: the rigid field's ultrasound and E1 frames, with the full ROI and with
    the ROI restricted to pixels ≥ (patch half-width + 1) pixels inside both the plan's cord
    (through B) and the intraoperative cord (at the true poses)."""
    frames, _ = resimulated(c, built, simulator_like(built.simulator, rigid_intra), opts)
    e1 = render(built, rigid_intra, true_p2m, c.frames)
    d_min = (opts.tumor_patch_half + 1) * c.frames.spacing_mm
    plan = load_volume(cd / "anatomy_preop.nii.gz")
    deep = T.roi_masks(c.frames, depth_volume(plan), c.bony, -d_min) > 0
    to_mri = built.anatomy.spine_to_mri @ rigid_intra.index_to_spine()
    now = depth_volume(Volume(rigid_intra.labels, to_mri, source="rigid intraoperative"))
    truth_frames = dataclasses.replace(
        c.frames, pixel_to_reference=np.linalg.inv(c.sim.reference_to_mri) @ true_p2m
    )
    deep &= T.roi_masks(truth_frames, now, c.sim.reference_to_mri, -d_min) > 0
    rows = []
    for name, fr in (
        ("rigid_us", frames),
        ("rigid_us_deep", with_valid(frames, deep)),
        ("rigid_e1", e1),
        ("rigid_e1_deep", with_valid(e1, deep)),
    ):
        fit = T._fit_member(
            fr, c.context, c.bony, opts, "lc2", opts.tumor_roi_mm, opts.tumor_patch_half
        )
        t = fit.translation_mm
        row = {"case": cd.name, "variant": name, "ratio": float(t @ t_rigid / (t_rigid @ t_rigid))}
        row["frames"] = fit.frames
        rows.append(row)
        print(row, flush=True)
    return rows


def case_rows(cd: Path, res: dict, opts: RegistrationOptions, mode: str = "us") -> list[dict]:
    c = load_case(cd, res, opts)
    built, true_p2m = true_pixel_to_mri(c)
    anat = built.anatomy
    rigid_anat = dataclasses.replace(anat)
    wz_only = rigid_anat.shift_weight

    def along_only(q: np.ndarray) -> np.ndarray:
        # the shipped weight with rho forced to 0 (its taper along the cord kept)
        q = np.asarray(q, dtype=np.float64).copy()
        q[..., 0], q[..., 1] = rigid_anat.cord_offset[0], rigid_anat.cord_offset[1]
        return wz_only(q)

    object.__setattr__(rigid_anat, "shift_weight", along_only)
    rigid_intra = intraoperative(rigid_anat, built.preop)
    t_rigid = c.proj @ rigid_needed(c, rigid_anat)
    variants = {
        "same": (simulator_like(built.simulator), c.t_star_fit),
        "nospeckle": (simulator_like(built.simulator, speckle=False), c.t_star_fit),
        "rigid": (simulator_like(built.simulator, rigid_intra), t_rigid),
        "rigid_nospeckle": (simulator_like(built.simulator, rigid_intra, False), t_rigid),
    }
    if mode == "deep":
        return deep_rows(cd, c, built, true_p2m, rigid_intra, t_rigid, opts)
    if mode == "dura":
        variants = {
            "rigid": variants["rigid"],
            "rigid_nodura": (simulator_like(built.simulator, rigid_intra, dura=False), t_rigid),
        }
    if mode == "e1":
        variants = {
            "e1": (render(built, built.intraop, true_p2m, c.frames), c.t_star_fit),
            "e1_rigid": (render(built, rigid_intra, true_p2m, c.frames), t_rigid),
        }
    rows = []
    for name, (us_sim, target) in variants.items():
        if mode == "e1":
            row = {"case": cd.name, "variant": name, "need_mm": float(np.linalg.norm(target))}
            fit = T._fit_member(
                us_sim, c.context, c.bony, opts, "lc2", opts.tumor_roi_mm, opts.tumor_patch_half
            )
            row["ratio"] = float(fit.translation_mm @ target / (target @ target))
            rows.append(row)
            print(row, flush=True)
            continue
        frames, diff = resimulated(c, built, us_sim, opts)
        fit = T._fit_member(
            frames, c.context, c.bony, opts, "lc2", opts.tumor_roi_mm, opts.tumor_patch_half
        )
        t = fit.translation_mm
        row = {
            "case": cd.name,
            "variant": name,
            "need_mm": float(np.linalg.norm(target)),
            "image_diff": diff,
            "ratio": float(t @ target / (target @ target)),
            "miss_mm": float(np.linalg.norm(t - target)),
            "now_mm": c.scorer.error_now_mm(_translated(c.bony, t)) if name[:5] != "rigid" else "",
        }
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return rows


def main(
    cases: str, results: str, controls: str, out: str, max_cases: int = 0, mode: str = "us"
) -> None:
    rows = run_cases(case_rows, cases, results, controls, out, max_cases, mode=mode)
    for variant in dict.fromkeys(x["variant"] for x in rows):
        r = np.array([x["ratio"] for x in rows if x["variant"] == variant])
        p10, p90 = np.percentile(r, [10, 90])
        print(f"{variant}: n {r.size}, ratio median {np.median(r):.2f} [{p10:.2f}, {p90:.2f}]")


if __name__ == "__main__":
    extra = sys.argv[5:7]
    main(*sys.argv[1:5], int(extra[0]) if extra else 0, extra[1] if len(extra) > 1 else "us")
