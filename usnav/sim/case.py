"""One simulated case: anatomy → MRI → surgery → tracked ultrasound sweep → files + truth.

:func:`simulate_case` is what ``usnav simulate`` runs. The same seed and options give the same
case (bit for bit on one machine); every random part draws from its own stream
``numpy.random.default_rng([seed, part])`` so that changing one option does not reshuffle the
others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

import usnav
from usnav.config.calibration import (
    CalibrationFile,
    SpatialCalibration,
    TemporalCalibration,
    save_calibration,
)
from usnav.errors import InputError
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.volume import Volume, save_volume
from usnav.sim.anatomy import (
    LabelGrid,
    SpineAnatomy,
    intraoperative,
    paint_preop,
    random_anatomy,
    smooth_noise_volume,
)
from usnav.sim.families import (
    AXIAL_SIGMA_10MHZ_MM,
    LATERAL_SIGMA_10MHZ_MM,
    PULSE_LENGTH_SIGMAS,
    Appearance,
    draw_appearance,
)
from usnav.sim.landmarks import LANDMARK_DEFINITIONS, case_landmarks
from usnav.sim.mri import MriResult, simulate_mri
from usnav.sim.options import SimOptions, make_options
from usnav.sim.sweep import TRANSDUCER_TO_PROBE, TrackedSweep, plan_sweep
from usnav.sim.tissues import TUMOR_BACKSCATTER, AcousticTables, Tissue, acoustic_tables
from usnav.sim.ultrasound import ProbeGeometry, ScannerSettings, UltrasoundSimulator

#: Bumped whenever the simulator's output changes for a given seed (names the demo cache).
SIM_VERSION = 6

# random streams
_ANATOMY, _MRI, _SWEEP, _TEXTURE, _SPECKLE, _INIT = 1, 2, 3, 4, 5, 6

FILE_NAMES = {
    "mri": "mri.nii.gz",
    "tumor_label": "tumor_label.nii.gz",
    "anatomy_preop": "anatomy_preop.nii.gz",
    "anatomy_intraop": "anatomy_intraop.nii.gz",
    "removed_label": "removed_label.nii.gz",
    "sweep": "sweep.igs.mha",
    "calibration": "calibration.toml",
    "truth": "truth.json",
    "init_reference_to_mri": "init_ReferenceToMri.txt",
}


@dataclass
class CaseFiles:
    """The files of one simulated case (all in ``folder``)."""

    folder: Path
    seed: int
    mri: Path
    tumor_label: Path
    sweep: Path
    calibration: Path
    truth: Path
    init_reference_to_mri: Path
    anatomy_preop: Path | None = None
    anatomy_intraop: Path | None = None
    removed_label: Path | None = None
    previews: list[Path] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class SimulatedCase:
    """Everything :func:`build_case` computes (in memory), before files are written."""

    seed: int
    options: SimOptions
    anatomy: SpineAnatomy
    preop: LabelGrid
    intraop: LabelGrid
    mri: MriResult
    sweep: TrackedSweep
    geometry: ProbeGeometry
    simulator: UltrasoundSimulator
    timings_s: dict[str, float]
    appearance: Appearance = field(default_factory=Appearance)
    calibration_image_to_probe: np.ndarray | None = None

    @property
    def written_image_to_probe(self) -> np.ndarray:
        """The ImageToProbe written to ``calibration.toml`` (the true one unless the family
        miscalibrates the probe)."""
        if self.calibration_image_to_probe is None:
            return self.sweep.image_to_probe
        return self.calibration_image_to_probe


def check_output_folder(out_dir: str | Path) -> Path:
    """Refuse an output path that is a file or lies under a file; return it as a Path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            out, "output path exists and is a file", "give a folder (it is created if missing)"
        )
    for parent in out.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(out, f"{parent} is a file, so this folder cannot be created")
        if parent.exists():
            break
    return out


def effective_options(options: SimOptions, appearance: Appearance) -> SimOptions:
    """The options with what the appearance family drew put in (levels, tumor length, cord
    shift, frequency, jitter); the family's own values win over the given ones."""
    a = appearance
    update: dict = {}
    if a.levels is not None:
        update["levels"] = a.levels
    if a.laminectomy_levels is not None:
        update["laminectomy_levels"] = a.laminectomy_levels
    if a.tumor_length_mm is not None:
        update["tumor_length_mm"] = (a.tumor_length_mm, a.tumor_length_mm)
    if a.cord_shift_mm is not None:
        update["cord_shift_mm"] = (a.cord_shift_mm, a.cord_shift_mm)
    if a.frequency_mhz is not None:
        update["frequency_mhz"] = a.frequency_mhz
    if a.depth_mm is not None:
        update["depth_mm"] = a.depth_mm
    if a.aperture_mm is not None:
        update["aperture_mm"] = a.aperture_mm
    if a.jitter_mm is not None:
        update["jitter_mm"] = a.jitter_mm
    if a.jitter_deg is not None:
        update["jitter_deg"] = a.jitter_deg
    if not update:
        return options
    return make_options(**{**options.model_dump(), **update})


def appearance_tables(tumor_backscatter: float, a: Appearance) -> AcousticTables:
    """The acoustic tables of a case with the appearance's tissue changes applied: speed of
    sound in saline and CSF (impedance follows, Z = ρc), interface roughness, scatterer
    density and bone attenuation."""
    t = acoustic_tables(tumor_backscatter)
    if a.saline_speed_m_s != 1520.0 or a.csf_speed_m_s != 1504.5:
        for tissue, c in ((Tissue.SALINE, a.saline_speed_m_s), (Tissue.CSF, a.csf_speed_m_s)):
            density_kg_m3 = t.impedance[tissue] * 1e6 / t.speed[tissue]
            t.speed[tissue] = c
            t.impedance[tissue] = density_kg_m3 * c / 1e6
    if a.roughness_offset:
        t.roughness[:] = np.clip(t.roughness + a.roughness_offset, 0.0, 1.0)
    if a.scatterer_density_scale != 1.0:
        # floor 0.001: ~0.07 scatterers per resolution cell at 10 MHz, still a few per frame
        t.density[:] = np.clip(t.density * a.scatterer_density_scale, 0.001, 1.0)
    if a.bone_attenuation_scale != 1.0:
        for tissue in (Tissue.BONE, Tissue.MARROW):
            t.attenuation[tissue] *= a.bone_attenuation_scale
    return t


def appearance_settings(
    a: Appearance, frequency_mhz: float, elevation_rays: int
) -> ScannerSettings:
    """Scanner settings of an appearance: the PSF follows the wavelength (σ ∝ 1/f), the echo
    delay is a fraction of the spatial pulse length, gain moves the display reference."""
    base = ScannerSettings()
    scale = 10.0 / frequency_mhz
    axial = AXIAL_SIGMA_10MHZ_MM * scale if frequency_mhz != 10.0 else base.axial_sigma_mm
    lateral = LATERAL_SIGMA_10MHZ_MM * scale if frequency_mhz != 10.0 else base.lateral_sigma_mm
    return ScannerSettings(
        axial_sigma_mm=axial,
        lateral_sigma_mm=lateral,
        elevation_rays=elevation_rays,
        specular_exponent=a.specular_exponent,
        tgc_db_per_cm=a.tgc_db_per_cm,
        scatter_gain=base.scatter_gain * a.scatter_gain_scale,
        dynamic_range_db=a.dynamic_range_db,
        reference=base.reference / 10.0 ** (a.gain_db / 20.0) if a.gain_db else base.reference,
        echo_delay_mm=a.echo_delay_pulses * PULSE_LENGTH_SIGMAS * axial,
        reverb_face_reflection=a.reverb_face_reflection,
        reverb_bounces=a.reverb_bounces,
        sidelobe_level=0.0 if a.sidelobe_db is None else 10.0 ** (a.sidelobe_db / 20.0),
        sidelobe_offset_fwhm=a.sidelobe_offset_fwhm,
        compression_gamma=a.compression_gamma,
    )


def build_case(
    seed: int, options: SimOptions, progress: Callable[[str], None] | None = None
) -> SimulatedCase:
    """Anatomy, MRI, intraoperative anatomy, sweep plan and the ultrasound simulator.

    The appearance family ``options.family`` is drawn first (stream ``[seed, 7]``); the
    returned case's ``options`` are the effective ones (:func:`effective_options`).
    """
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    appearance = draw_appearance(options.family, seed)
    options = effective_options(options, appearance)
    t = time.perf_counter()
    say("anatomy")
    anat = random_anatomy(
        np.random.default_rng([seed, _ANATOMY]),
        levels=options.levels,
        laminectomy_levels=options.laminectomy_levels,
        tumor_length_mm=options.tumor_length_mm,
        shift_mm=options.cord_shift_mm,
        echogenicity=options.tumor_echogenicity,
        cyst=options.cyst,
        size_scale=appearance.vertebra_scale,
    )
    preop = paint_preop(anat, options.voxel_mm)
    timings["anatomy"] = time.perf_counter() - t

    t = time.perf_counter()
    say("MRI")
    mri = simulate_mri(anat, preop, np.random.default_rng([seed, _MRI]), options.mri_spacing_mm)
    timings["mri"] = time.perf_counter() - t

    t = time.perf_counter()
    say("surgery")
    intra = intraoperative(anat, preop)
    timings["intraoperative"] = time.perf_counter() - t

    t = time.perf_counter()
    sx, sy = options.pixel_mm
    geometry = ProbeGeometry(
        cols=options.image_cols,
        rows=options.image_rows,
        spacing_x_mm=sx,
        spacing_y_mm=sy,
        frequency_mhz=options.frequency_mhz,
        focus_mm=appearance.focus_fraction * options.depth_mm,
    )
    sweep = plan_sweep(
        anat,
        geometry,
        np.random.default_rng([seed, _SWEEP]),
        n_frames=options.frames,
        frame_rate_hz=options.frame_rate_hz,
        sweep_length_mm=options.sweep_length_mm,
        tracker_lag_s=options.tracker_lag_s + appearance.unrecorded_lag_s,
        jitter_mm=options.jitter_mm,
        jitter_deg=options.jitter_deg,
        pattern=appearance.sweep_pattern,
        coverage=appearance.coverage,
        coverage_centre=appearance.coverage_centre,
        fan_half_angle_deg=appearance.fan_half_angle_deg,
        sagittal_half_width_mm=appearance.sagittal_half_width_mm,
    )
    written = None
    if appearance.calibration_rotation_deg or appearance.calibration_translation_mm:
        to_transducer = geometry.image_to_transducer()
        centre = to_transducer @ np.array([(geometry.cols - 1) / 2, (geometry.rows - 1) / 2, 0, 1])
        error = appearance.calibration_error(centre[:3])
        written = TRANSDUCER_TO_PROBE @ error @ to_transducer
    tex_spacing = 1.0
    tex_shape = tuple(
        int(np.ceil((preop.labels.shape[d] - 1) * preop.spacing / tex_spacing)) + 2
        for d in range(3)
    )
    texture = smooth_noise_volume(np.random.default_rng([seed, _TEXTURE]), tex_shape, 1.0)
    tumor_backscatter = (
        appearance.tumor_backscatter
        if appearance.tumor_backscatter is not None
        else TUMOR_BACKSCATTER[anat.tumor.echogenicity]
    )
    tables = appearance_tables(tumor_backscatter, appearance)
    settings = appearance_settings(appearance, options.frequency_mhz, options.elevation_rays)
    speckle_seed = int(np.random.default_rng([seed, _SPECKLE]).integers(0, 2**62))
    simulator = UltrasoundSimulator(
        intra, texture, preop.origin, tex_spacing, tables, geometry, settings, seed=speckle_seed
    )
    timings["sweep_plan"] = time.perf_counter() - t
    return SimulatedCase(
        seed,
        options,
        anat,
        preop,
        intra,
        mri,
        sweep,
        geometry,
        simulator,
        timings,
        appearance,
        written,
    )


def simulate_frames(case: SimulatedCase, workers: int = 1) -> Iterator[np.ndarray]:
    """The B-mode frames of the sweep, in order (``workers`` threads; the kernels release the
    GIL)."""
    poses = case.sweep.image_poses
    if workers <= 1:
        for i in range(len(poses)):
            yield case.simulator.frame(poses[i], i)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # bounded look-ahead keeps memory flat for long sweeps
        pending = []
        for i in range(len(poses)):
            pending.append(pool.submit(case.simulator.frame, poses[i], i))
            if len(pending) > 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def tracked_frames(case: SimulatedCase, images: Iterator[np.ndarray]) -> Iterator[TrackedFrame]:
    """Wrap simulated images into TrackedFrames with the recorded tracking."""
    s = case.sweep
    for i, image in enumerate(images):
        yield TrackedFrame(
            image=image,
            transforms={
                "ProbeToTracker": TrackedTransform(s.probe_to_tracker[i]),
                "ReferenceToTracker": TrackedTransform(s.reference_to_tracker[i]),
            },
            t_device=float(s.timestamps_s[i]),
            t_received=float(s.timestamps_s[i]),
            frame_number=int(s.frame_numbers[i]),
            orientation="MF",
        )


def perturbation(
    rng: np.random.Generator,
    centre: np.ndarray,
    translation_mm: tuple[float, float],
    rotation_deg: tuple[float, float],
) -> tuple[np.ndarray, dict]:
    """A rigid MRI→MRI offset: rotation of a uniform angle about a random axis through
    ``centre``, then a translation of uniform length in a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = float(rng.uniform(*rotation_deg))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    length = float(rng.uniform(*translation_mm))
    rot = Rotation.from_rotvec(np.radians(angle) * axis).as_matrix()
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = centre - rot @ centre + direction * length
    info = {
        "rotation_deg": angle,
        "rotation_axis_mri": axis.tolist(),
        "translation_mm": length,
        "translation_direction_mri": direction.tolist(),
        "rotation_centre_mri": [float(x) for x in centre],
    }
    return m, info


def _as_list(a: np.ndarray | None):
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


def removed_tissue(
    preop: np.ndarray, intraop: np.ndarray, index_to_mri: np.ndarray
) -> Volume | None:
    """The tissue the laminectomy removed (1: saline in the operated anatomy, not before), on
    the label grid cropped to it, MRI RAS mm: what a planner draws for ``usnav register
    --removed`` (exact here; a drawn one is not). None when nothing was removed."""
    removed = (intraop == Tissue.SALINE) & (preop != Tissue.SALINE)
    where = np.argwhere(removed)
    if not len(where):
        return None
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    shift = np.eye(4)
    shift[:3, 3] = lo
    crop = removed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.uint8)
    return Volume(crop, index_to_mri @ shift, source="simulated removed tissue")


def write_case(
    case: SimulatedCase, out_dir: str | Path, progress: Callable[[str], None] | None = None
) -> CaseFiles:
    """Simulate the frames and write every file of the case into ``out_dir``."""
    say = progress or (lambda message: None)
    out = check_output_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts, anat, sweep = case.options, case.anatomy, case.sweep
    timings = dict(case.timings_s)
    paths = {k: out / v for k, v in FILE_NAMES.items()}

    t = time.perf_counter()
    save_volume(case.mri.mri, paths["mri"])
    save_volume(case.mri.tumor_label, paths["tumor_label"])
    to_mri = anat.spine_to_mri @ case.preop.index_to_spine()
    if opts.save_anatomy:
        save_volume(Volume(case.preop.labels, to_mri), paths["anatomy_preop"])
        save_volume(Volume(case.intraop.labels, to_mri), paths["anatomy_intraop"])
    removed = removed_tissue(case.preop.labels, case.intraop.labels, to_mri)
    if removed is not None:
        save_volume(removed, paths["removed_label"])
    timings["write_volumes"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"ultrasound ({opts.frames} frames)")
    from usnav.io.sequence import write_sequence

    images = simulate_frames(case, opts.workers)
    write_sequence(paths["sweep"], tracked_frames(case, images), compress=True, orientation="MF")
    timings["ultrasound_and_sweep_file"] = time.perf_counter() - t

    t = time.perf_counter()
    calib = CalibrationFile(
        probe="usnav-sim-L10",
        depth_mm=opts.depth_mm,
        sources=[f"usnav simulate --seed {case.seed}"],
        notes=(
            "simulated probe: exact ImageToProbe"
            if case.calibration_image_to_probe is None
            else "simulated probe: MISCALIBRATED on purpose (truth.json has the true one)"
        )
        + (", simulated tracker lag" if opts.tracker_lag_s else ""),
        spatial=SpatialCalibration(
            image_to_probe=case.written_image_to_probe.tolist(),
            image_size_px=[case.geometry.cols, case.geometry.rows],
        ),
        temporal=TemporalCalibration(tracker_lag_s=opts.tracker_lag_s)
        if opts.tracker_lag_s
        else None,
    )
    save_calibration(calib, paths["calibration"])

    pre, intra = case_landmarks(anat)
    centroid = pre["tumor_centroid"]
    assert centroid is not None
    offset, offset_info = perturbation(
        np.random.default_rng([case.seed, _INIT]),
        centroid,
        opts.init_offset_mm,
        opts.init_offset_deg,
    )
    init = offset @ sweep.reference_to_mri
    # 16 numbers, row-major, no header: what np.loadtxt and usnav's matrix readers take
    np.savetxt(paths["init_reference_to_mri"], init, fmt="%.9f")
    truth = _truth_document(case, pre, intra, init, offset_info, paths)
    paths["truth"].write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    timings["truth"] = time.perf_counter() - t

    files = CaseFiles(
        folder=out,
        seed=case.seed,
        mri=paths["mri"],
        tumor_label=paths["tumor_label"],
        sweep=paths["sweep"],
        calibration=paths["calibration"],
        truth=paths["truth"],
        init_reference_to_mri=paths["init_reference_to_mri"],
        anatomy_preop=paths["anatomy_preop"] if opts.save_anatomy else None,
        anatomy_intraop=paths["anatomy_intraop"] if opts.save_anatomy else None,
        removed_label=paths["removed_label"] if removed is not None else None,
    )
    if opts.preview:
        t = time.perf_counter()
        say("previews")
        from usnav.io.sequence import read_sequence
        from usnav.sim.preview import write_previews

        with read_sequence(paths["sweep"]) as seq:
            images = [np.array(seq.image(i)) for i in range(len(seq))]
        files.previews = write_previews(case, out, images)
        timings["preview"] = time.perf_counter() - t
    files.timings_s = timings
    return files


def _echogenicity(case: SimulatedCase) -> str:
    """The tumor's echogenicity: the anatomy's, or (a family drew the backscatter) named from
    the drawn value against the cord's (0.11): hypo < 0.08 <= iso < 0.2 <= hyper."""
    if case.appearance.tumor_backscatter is None:
        return case.anatomy.tumor.echogenicity
    b = case.appearance.tumor_backscatter
    return "hypoechoic" if b < 0.08 else "isoechoic" if b < 0.2 else "hyperechoic"


def _calibration_error(case: SimulatedCase) -> dict:
    """How far the written calibration is from the true one: the displacement of the image
    centre (mm) and the rotation angle (deg)."""
    g = case.geometry
    centre = np.array([(g.cols - 1) / 2, (g.rows - 1) / 2, 0.0, 1.0])
    true, written = case.sweep.image_to_probe, case.written_image_to_probe
    moved = float(np.linalg.norm((written @ centre - true @ centre)[:3]))
    # rotation part in mm space: strip the pixel scaling (same in both)
    scale = np.linalg.norm(true[:3, :3], axis=0)
    rel = (written[:3, :3] / scale) @ (true[:3, :3] / scale).T
    angle = float(np.degrees(Rotation.from_matrix(np.array(rel)).magnitude()))
    return {"error_image_centre_mm": moved, "error_rotation_deg": angle}


def _truth_document(
    case: SimulatedCase,
    pre: dict,
    intra: dict,
    init: np.ndarray,
    offset_info: dict,
    paths: dict[str, Path],
) -> dict:
    anat, sweep, opts = case.anatomy, case.sweep, case.options
    rot = anat.spine_to_mri[:3, :3]
    centroid_spine = np.linalg.inv(anat.spine_to_mri) @ np.r_[pre["tumor_centroid"], 1.0]
    shift_at_tumor = float(np.linalg.norm(anat.displacement(centroid_spine[:3])))
    lo, hi = anat.window
    init_err = np.linalg.norm(
        (
            np.c_[pre["tumor_boundary"], np.ones(len(pre["tumor_boundary"]))]
            @ (init @ np.linalg.inv(sweep.reference_to_mri)).T
        )[:, :3]
        - pre["tumor_boundary"],
        axis=1,
    )
    return {
        "format": 1,
        "generator": "usnav simulate",
        "usnav_version": usnav.__version__,
        "simulator_version": SIM_VERSION,
        "seed": case.seed,
        "options": json.loads(opts.model_dump_json()),
        "conventions": (
            "Frames: Image (pixels col,row,0; MF), Probe, Reference, Tracker, Mri (the MRI's "
            "world space, RAS mm, as the affine of mri.nii.gz). A pixel reaches the MRI as "
            "ReferenceToMri @ inv(ReferenceToTracker) @ ProbeToTracker(t + tracker_lag_s) @ "
            "ImageToProbe @ [col,row,0,1], t the image's timestamp and tracker_lag_s the true "
            "lag (this file's tracker_lag_s; 0: the pose recorded with the image). Matrices "
            "are row-major 4x4, mm."
        ),
        "ReferenceToMri": _as_list(sweep.reference_to_mri),
        "init_ReferenceToMri": _as_list(init),
        "init_offset": {
            **offset_info,
            "definition": "init_ReferenceToMri = Offset @ ReferenceToMri, Offset = rotation about "
            "the tumor centroid followed by a translation (MRI frame)",
            "tre_tumor_boundary_mean_mm": float(init_err.mean()),
        },
        "ImageToProbe": _as_list(sweep.image_to_probe),
        "calibration_written": {
            "ImageToProbe": _as_list(case.written_image_to_probe),
            **_calibration_error(case),
            "definition": "calibration.toml holds this ImageToProbe; ImageToProbe above is the "
            "true one. Errors: of the image centre (mm) and the rotation angle (deg) of "
            "written @ inv(true) in probe mm",
        },
        "family": case.appearance.family,
        "appearance": {
            **case.appearance.as_dict(),
            "tumor_backscatter_used": float(case.simulator.tables.backscatter[Tissue.TUMOR]),
            "scanner": {
                k: getattr(case.simulator.settings, k)
                for k in (
                    "axial_sigma_mm",
                    "lateral_sigma_mm",
                    "echo_delay_mm",
                    "reference",
                    "scatter_gain",
                    "sidelobe_level",
                )
            },
        },
        "tracker_lag_s": sweep.tracker_lag_s,
        "tracker_lag_written_s": opts.tracker_lag_s,
        "image": {
            "cols": case.geometry.cols,
            "rows": case.geometry.rows,
            "spacing_mm": [case.geometry.spacing_x_mm, case.geometry.spacing_y_mm],
            "orientation": "MF",
            "frequency_mhz": case.geometry.frequency_mhz,
            "depth_mm": case.geometry.depth_mm,
            "aperture_mm": case.geometry.aperture_mm,
            "focus_mm": case.geometry.focus_mm,
        },
        "cord_shift": {
            "max_mm": float(anat.shift_mm),
            "at_tumor_centroid_mm": shift_at_tumor,
            "direction_mri": _as_list(rot @ anat.shift_direction),
            "definition": (
                "The intraoperative anatomy (what the ultrasound images) is the preoperative "
                "anatomy (what the MRI shows) after a laminectomy and a cord shift: a point X "
                "of the cord or of what it carries (tumor, cyst, central canal, rootlets) lies "
                "at X + u(X), u a smooth displacement field with |u| <= max_mm (max_mm at the "
                "cord's centre over the laminectomy, tapering to 0 at the bony canal wall and "
                "15 mm beyond the window). The dura, the CSF space and everything outside the "
                "sac stay where they were; CSF fills the space the cord leaves. ReferenceToMri "
                "is the rigid patient registration (exact for bone and dura); the shift is a "
                "residual non-rigid component that no rigid registration can remove."
            ),
        },
        "tumor": {
            "echogenicity": _echogenicity(case),
            "backscatter": float(case.simulator.tables.backscatter[Tissue.TUMOR]),
            "length_mm": float(
                np.linalg.norm(pre["tumor_pole_superior"] - pre["tumor_pole_inferior"])
            ),
            "has_cyst": anat.tumor.cyst_center is not None,
            "tumor_label_values": {"solid": 1, "cyst": 2},
        },
        "laminectomy": {
            "levels": anat.laminectomy_levels,
            "first_level": anat.laminectomy_first_level,
            "segment_levels": anat.levels,
            "window_length_mm": hi - lo,
        },
        "landmarks": {
            "frame": "Mri",
            "anatomy": "preoperative (where the MRI shows them)",
            "units": "mm, RAS",
            "definitions": LANDMARK_DEFINITIONS,
            "tre_definition": (
                "For an estimate E of ReferenceToMri, the target registration error at landmark "
                "X is |E @ inv(ReferenceToMri) @ X - X| (X homogeneous); mTRE = its mean over "
                "a set of landmarks (e.g. tumor_boundary + centroid + poles)."
            ),
            **{k: _as_list(v) for k, v in pre.items()},
        },
        "landmarks_intraoperative": {
            "frame": "Mri",
            "anatomy": "intraoperative: X + u(X), expressed in MRI coordinates through the "
            "true ReferenceToMri (where the ultrasound shows them)",
            **{k: _as_list(v) for k, v in intra.items()},
        },
        "sweep": {
            "frames": opts.frames,
            "frame_rate_hz": opts.frame_rate_hz,
            "duration_s": float(sweep.timestamps_s[-1] - sweep.timestamps_s[0]),
            "length_mm": float(abs(sweep.sweep_z[1] - sweep.sweep_z[0])),
            "probe_height_above_dura_mm": sweep.height_mm,
            "jitter_mm": opts.jitter_mm,
            "jitter_deg": opts.jitter_deg,
            "pattern": sweep.pattern,
        },
        "mri": {
            "noise_sigma": case.mri.noise_sigma,
            "bias_range": list(case.mri.bias_range),
            "spacing_mm": list(opts.mri_spacing_mm),
        },
        "files": {k: p.name for k, p in paths.items()},
    }


def simulate_case(
    seed: int,
    out_dir: str | Path,
    options: SimOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> CaseFiles:
    """Simulate one case into ``out_dir`` (created if missing).

    Parameters
    ----------
    seed
        Non-negative integer; the same seed and options give the same case.
    out_dir
        Output folder (must not be a file).
    options
        :class:`SimOptions` (defaults if None); build it with
        :func:`usnav.sim.options.make_options` to get an :class:`InputError` for bad values.
    progress
        Called with a short stage name as the work advances.

    Returns
    -------
    CaseFiles
        Paths of the written files and the time each stage took.

    Raises
    ------
    InputError
        Negative seed, or an output path that is (under) a file — before any work starts.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed", f"must be a non-negative integer, got {seed!r}")
    options = options or SimOptions()
    out = check_output_folder(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the output folder: {exc.strerror}") from exc
    t = time.perf_counter()
    case = build_case(int(seed), options, progress)
    files = write_case(case, out_dir, progress)
    files.timings_s["total"] = time.perf_counter() - t
    return files
