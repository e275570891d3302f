"""Registration benchmarks: kernels against the memory-bandwidth floor and scipy/SimpleITK,
accuracy and time on simulated spine cases (seeds looked at before: see below), RESECT Case 24, the
streaming update, the frame path's latency beside the worker, memory for a 512³ MRI.

Seeds: the method was tuned on simulator seeds 1001-1040 (and 101; tests use 7-9); seeds
2001-2040 served failure analyses after two earlier benchmark runs and are excluded too; the
benchmark uses seeds 2041-2060 (quick mode: 2041 only), which are not fresh either: the
project's seed ledger (notes/seed-ledger.jsonl) records them as tuning (a speed trim was chosen
after a look at them, the ambiguity probe designed on 2046); its per-family sets too have been
reported on before. A figure on seeds nobody has looked at is ``usnav evaluate --report``'s.
The per-family table (#16) runs every
appearance family (``--full``: 42 held-out cases on seeds 6601-6642 and 24 tuned-on ones on
6101-6124; quick: baseline and mixed, 3001), tuned-on families (``usnav.sim.TUNING_FAMILIES``)
and held-out ones side by side. SimpleITK's rigid registration
(Mattes mutual information, 3 levels, the tool a user would otherwise pick) runs on the same
input: it cannot register 2D frames to a volume, so it gets the sweep reconstructed at 1 mm
(the reconstruction time is counted in its row).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark, smoke_only
from usnav.lifeline import child_env

BENCH_SEEDS_FULL = tuple(range(2041, 2061))
BENCH_SEEDS_QUICK = (2041,)


# ----------------------------------------------------------------------------- helpers


def _median_time(fn, repeat: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _memory_bandwidth_gbs() -> float:
    """Copy bandwidth (read + write) of a 128 MiB float32 array, GB/s."""
    src = np.ones(32 * 1024 * 1024, np.float32)
    dst = np.empty_like(src)
    t = _median_time(lambda: np.copyto(dst, src), repeat=5)
    return 2 * src.nbytes / t / 1e9


def _sim_case(ctx: BenchContext, seed: int) -> Path:
    """A simulated case with default options, cached under the bench work folder."""
    from usnav.sim import SIM_VERSION, make_options, simulate_case

    folder = ctx.work_dir / "registration" / f"sim-v{SIM_VERSION}" / f"s{seed}"
    if not (folder / "truth.json").exists():
        ctx.progress(f"simulating case {seed}")
        simulate_case(seed, folder, make_options(save_anatomy=False))
    return folder


def _load_case(folder: Path):
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.sweep import load_sweep
    from usnav.sim import load_truth

    cal = load_calibration(folder / "calibration.toml").image_to_probe
    return (
        load_volume(folder / "mri.nii.gz"),
        load_sweep(folder / "sweep.igs.mha", cal),
        cal,
        load_truth(folder),
    )


def _to_sitk(volume):
    import SimpleITK as sitk

    data = np.transpose(np.asarray(volume.data, np.float32), (2, 1, 0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(data))
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in volume.affine[:3, 3]])
    img.SetDirection([float(v) for v in (volume.affine[:3, :3] / spacing).ravel()])
    return img


def sitk_rigid(mri, sweep, initial: np.ndarray) -> tuple[np.ndarray, float]:
    """SimpleITK rigid registration (Mattes MI, 3 levels) of the sweep reconstructed at 1 mm
    to the MRI; returns (ReferenceToMri, seconds including the reconstruction)."""
    import SimpleITK as sitk

    from usnav.registration.reconstruct import ReconstructionOptions, reconstruct_volume

    t0 = time.perf_counter()
    rec = reconstruct_volume(
        sweep,
        ReconstructionOptions(
            spacing_mm=(1.0, 1.0, 1.0), interpolation="linear", use_fov_mask=True
        ),
    )
    fixed = _to_sitk(rec.volume)
    mask = _to_sitk(type(rec.volume)(rec.filled.astype(np.float32), rec.volume.affine))
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    moving = _to_sitk(mri)
    centre = (
        np.c_[np.argwhere(rec.filled), np.ones(int(rec.filled.sum()))] @ rec.volume.affine[:3].T
    ).mean(axis=0)
    r = initial[:3, :3]
    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(v) for v in centre])
    tx.SetMatrix([float(v) for v in r.ravel()])
    tx.SetTranslation([float(v) for v in initial[:3, 3] + r @ centre - centre])
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, 1)
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0,
        numberOfIterations=100,
        convergenceMinimumValue=1e-6,
        convergenceWindowSize=10,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=False)
    out = reg.Execute(fixed, moving)
    final = (
        sitk.Euler3DTransform(sitk.CompositeTransform(out).GetNthTransform(0))
        if out.GetName() == "CompositeTransform"
        else sitk.Euler3DTransform(out)
    )
    m = np.eye(4)
    rot = np.asarray(final.GetMatrix()).reshape(3, 3)
    c = np.asarray(final.GetCenter())
    m[:3, :3] = rot
    m[:3, 3] = np.asarray(final.GetTranslation()) + c - rot @ c
    return m, time.perf_counter() - t0


def _lc2_numpy(us, p, g, half):
    """The LC² of one image written with scipy box filters (the numpy baseline)."""
    from scipy.ndimage import uniform_filter

    size = 2 * half + 1

    def box(x):
        return uniform_filter(x, size, mode="constant")

    mu, mp, mg = box(us), box(p), box(g)
    cuu = box(us * us) - mu * mu
    cpp = box(p * p) - mp * mp
    cgg = box(g * g) - mg * mg
    cpg = box(p * g) - mp * mg
    cup = box(us * p) - mu * mp
    cug = box(us * g) - mu * mg
    det = cpp * cgg - cpg * cpg + 1e-12
    explained = (cgg * cup * cup - 2 * cpg * cup * cug + cpp * cug * cug) / det
    ok = cuu > 1e-9
    r2 = np.clip(explained[ok] / cuu[ok], 0, 1)
    w = np.sqrt(cuu[ok])
    return float((w * r2).sum() / w.sum())


# ----------------------------------------------------------------------------- kernels


@benchmark(
    "registration kernels: oblique reslice 256² from 256³, LC² 256² 7×7, start-up", "registration"
)
def bench_kernels(ctx: BenchContext) -> list[Figure]:
    from scipy.ndimage import map_coordinates
    from scipy.spatial.transform import Rotation

    from usnav.registration import _kernels as K

    compile_s = _startup_seconds()
    rng = np.random.default_rng(0)
    vol = rng.random((256, 256, 256), dtype=np.float32)
    r = Rotation.from_euler("xyz", [20, 30, 10], degrees=True).as_matrix()
    du, dv = r[:, 0].copy(), r[:, 1].copy()
    origin = np.full(3, 127.5) - 127.5 * du - 127.5 * dv
    out = np.zeros((256, 256), np.float32)
    t_numba = _median_time(lambda: K.reslice_plane(vol, origin, du, dv, out, np.float32(0)), 30)
    cc, rr = np.meshgrid(np.arange(256), np.arange(256))
    pts = origin[:, None, None] + du[:, None, None] * cc + dv[:, None, None] * rr
    t_scipy = _median_time(lambda: map_coordinates(vol, pts, order=1, cval=0.0), 5)
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(vol)
    ref = sitk.Image(256, 256, 1, sitk.sitkFloat32)
    ref.SetOrigin([float(v) for v in origin[::-1]])
    direction = np.eye(3)
    direction[:, 0] = du[::-1]
    direction[:, 1] = dv[::-1]
    direction[:, 2] = np.cross(du[::-1], dv[::-1])
    ref.SetDirection([float(v) for v in direction.ravel()])
    t_sitk = _median_time(
        lambda: sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0), 10
    )
    bandwidth = _memory_bandwidth_gbs()
    floor_hi = 256 * 256 * 32 / (bandwidth * 1e9)  # 8 voxels of 4 B per pixel, no reuse
    floor_lo = 256 * 256 * 8 / (bandwidth * 1e9)  # 1 voxel read + 1 pixel written
    # LC² of one 256×256 frame, 7×7 patches
    us = rng.random((256, 256)).astype(np.float32)
    p = rng.random((256, 256)).astype(np.float32)
    g = rng.random((256, 256)).astype(np.float32)
    valid = np.ones((256, 256), np.uint8)
    scratch = K.frame_scratch(256, 256)
    t_lc2 = _median_time(lambda: K.lc2_image(us, p, g, valid, 3, 0.5, *scratch[3:]), 15)
    t_lc2_np = _median_time(lambda: _lc2_numpy(us, p, g, 3), 5)
    return [
        Figure(
            "oblique reslice 256×256 from 256³ float32",
            t_numba * 1e3,
            "ms",
            target=f"≤ 3× floor ({3 * floor_hi * 1e3:.2f} ms)",
            met=t_numba <= 3 * floor_hi,
            baseline_name="scipy map_coordinates",
            baseline_value=t_scipy * 1e3,
            higher_is_better=False,
            note=f"floor {floor_lo * 1e6:.0f}-{floor_hi * 1e6:.0f} µs at the measured "
            f"{bandwidth:.1f} GB/s; ratio to upper floor {t_numba / floor_hi:.1f}",
        ),
        Figure(
            "oblique reslice vs SimpleITK Resample",
            t_numba * 1e3,
            "ms",
            baseline_name="SimpleITK Resample (linear)",
            baseline_value=t_sitk * 1e3,
            higher_is_better=False,
        ),
        Figure(
            "LC² of a 256×256 frame, 7×7 patches (running box sums)",
            t_lc2 * 1e3,
            "ms",
            baseline_name="numpy/scipy uniform_filter",
            baseline_value=t_lc2_np * 1e3,
            higher_is_better=False,
        ),
        Figure(
            "kernel start-up (load from cache, all kernels)",
            compile_s,
            "s",
            higher_is_better=False,
            note="JIT, reported separately from every registration time",
        ),
    ]


def _startup_seconds(cold: bool = False) -> float:
    """``warm_up()`` in a fresh process (from the on-disk cache, or cold with an empty one)."""
    env = dict(os.environ)
    if cold:
        import tempfile

        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="usnav-numba-cold-")
    code = "from usnav.registration import warm_up; print(warm_up())"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


@benchmark("registration JIT compile with an empty cache", "registration", quick=False)
def bench_cold_compile(ctx: BenchContext) -> list[Figure]:
    return [
        Figure(
            "kernel compile, cold (empty Numba cache)",
            _startup_seconds(cold=True),
            "s",
            higher_is_better=False,
            note="paid once per install; cached afterwards",
        )
    ]


# ----------------------------------------------------------------------------- accuracy


@benchmark(
    "registration accuracy and time, simulated spine cases (bench seeds, not fresh)", "registration"
)
def bench_simulated(ctx: BenchContext) -> list[Figure]:
    from usnav.registration import register_sweep, warm_up
    from usnav.registration.compound import register_sweep_compounded
    from usnav.registration.rigid import RegistrationOptions
    from usnav.registration.similarity import available_cores

    warm_up()
    seeds = BENCH_SEEDS_FULL if ctx.full else BENCH_SEEDS_QUICK
    rows = []
    for seed in seeds:
        folder = _sim_case(ctx, seed)
        mri, sweep, _, truth = _load_case(folder)
        init = truth.init_reference_to_mri
        ctx.progress(f"registering case {seed}")
        # quick mode (one case): 3 rounds, alternating, median times (a shared machine's noise
        # moved single runs by ±30 %); every round the same answers (deterministic)
        round_s, round_1, round_sitk = [], [], []
        for _ in range(1 if ctx.full else 3):
            # each registration on a freshly loaded sweep: its field-of-view mask is detected
            # inside the timed part, as for a recording read by `usnav register`
            result = register_sweep(mri, _load_case(folder)[1], init)
            round_s.append(result.seconds)
            # the same registration on one thread (the same answer to the bit, see the tests)
            one_thread = register_sweep(
                mri, _load_case(folder)[1], init, RegistrationOptions(threads=1)
            )
            round_1.append(one_thread.seconds)
            try:
                sitk_m, sitk_s = sitk_rigid(mri, sweep, init)
            except RuntimeError:  # ITK gives up (e.g. "all samples map outside")
                sitk_m, sitk_s = init, float("nan")
            round_sitk.append(sitk_s)
        row = {
            "seed": seed,
            "frames": len(sweep),
            "init": truth.mtre(init),
            "usnav": truth.mtre(result.reference_to_mri),
            "candidate": truth.mtre(result.candidate),
            "accepted": result.accepted,
            "seconds": float(np.median(round_s)),
            "seconds_1_thread": float(np.median(round_1)),
            "sitk": truth.mtre(sitk_m),
            "sitk_s": float(np.median(round_sitk)),
            "sitk_failed": bool(np.isnan(sitk_s)),
        }
        if ctx.full:
            vol = register_sweep_compounded(mri, sweep, init)
            ncc = register_sweep(
                mri, sweep, init, RegistrationOptions(metric="ncc_gradient", uncertainty=False)
            )
            row.update(
                volume=truth.mtre(vol.candidate),
                volume_s=vol.seconds,
                ncc=truth.mtre(ncc.candidate),
            )
        rows.append(row)
    _save(ctx, "registration_simulated.json", rows)
    ours = np.array([r["usnav"] for r in rows])
    sitk_err = np.array([r["sitk"] for r in rows])
    secs = np.array([r["seconds"] for r in rows])
    secs_1 = np.array([r["seconds_1_thread"] for r in rows])
    n = len(rows)
    figs = [
        Figure(
            f"median mTRE, {n} simulated case(s) from 4-8 mm / 3-8°",
            float(np.median(ours)),
            "mm",
            target="≤ 1.2 mm",
            met=bool(np.median(ours) <= 1.2),
            baseline_name="SimpleITK rigid, Mattes MI, 3 levels",
            baseline_value=float(np.median(sitk_err)),
            higher_is_better=False,
            note=f"initial median {np.median([r['init'] for r in rows]):.2f} mm; seeds "
            f"{seeds[0]}-{seeds[-1]} (not fresh: looked at while tuning, notes/seed-ledger.jsonl; "
            f"a fresh report is usnav evaluate --report); SimpleITK gave "
            f"up on {sum(r['sitk_failed'] for r in rows)} (counted at their initial error)",
        ),
        Figure(
            "cases under 2 mm",
            100.0 * float(np.mean(ours < 2.0)),
            "%",
            target="≥ 95 %",
            met=bool(np.mean(ours < 2.0) >= 0.95) if n >= 5 else None,
            baseline_name="SimpleITK rigid",
            baseline_value=100.0 * float(np.mean(sitk_err < 2.0)),
            note="" if n >= 5 else "one case in quick mode: --full",
        ),
        Figure(
            "accepted wrong: accepted estimates more than 2 mm off",
            float(sum(r["accepted"] and r["usnav"] > 2.0 for r in rows)),
            "cases",
            target="0",
            met=not any(r["accepted"] and r["usnav"] > 2.0 for r in rows),
            higher_is_better=False,
            note=f"{sum(r['accepted'] for r in rows)} of {n} accepted; a rejected case keeps "
            f"its initial error ({sum(not r['accepted'] and r['candidate'] < 2.0 for r in rows)}"
            " rejected although under 2 mm)",
        ),
        Figure(
            f"registration time per {rows[0]['frames']}-frame sweep (JIT excluded)",
            float(np.median(secs)),
            "s",
            target="≤ 1 s",
            met=bool(np.median(secs) <= 1.0),
            baseline_name="SimpleITK rigid (incl. 1 mm reconstruction)",
            baseline_value=float(np.nanmedian([r["sitk_s"] for r in rows] + [np.nan])),
            higher_is_better=False,
            note=f"max {secs.max():.2f} s; {'' if ctx.full else 'median of 3 alternating runs; '}"
            f"{available_cores()} thread(s) like SimpleITK's "
            f"(threads = every core, the default); on 1 thread {np.median(secs_1):.2f} s "
            f"median; load average {os.getloadavg()[0]:.1f}",
        ),
    ]
    if ctx.full:
        figs += [
            Figure(
                "median mTRE, compounded volume (3D LC²) instead of frames",
                float(np.median([r["volume"] for r in rows])),
                "mm",
                baseline_name="frames (default)",
                baseline_value=float(np.median(ours)),
                higher_is_better=False,
                note=f"{np.median([r['volume_s'] for r in rows]):.2f} s median; ratio < 1 "
                "means the default (frames) is better",
            ),
            Figure(
                "median mTRE, local NCC of gradients instead of LC²",
                float(np.median([r["ncc"] for r in rows])),
                "mm",
                baseline_name="LC² (default)",
                baseline_value=float(np.median(ours)),
                higher_is_better=False,
            ),
        ]
    return figs


#: Cases of the per-family table in --full mode, assigned round-robin exactly as
#: ``usnav simulate --seeds A-B --families <in this order>`` does, so that ``usnav evaluate`` on
#: such a dataset reproduces the table: held-out families on seeds 6601-6642 (6 cases each),
#: tuned-on families on seeds 6101-6124 (their column says how the tuned-on families fare on
#: seeds nobody tuned on). The split itself is ``usnav.sim.TUNING_FAMILIES / HELD_OUT_FAMILIES``.
#: A report set wears out as its misses are read: 6001-6042 (fresh in session 10, when 3001-3005
#: and 5001-5022 had been looked at) was reported in sessions 10-13 and its misses were read.
#: Session 14 reported the session-13 code once on fresh seeds 6501-6542, read their misses,
#: then changed the chance margin (chosen on tuning cases), and reports on 6601-6642, simulated
#: after that choice (6201-6284 are the margin-confidence check's). The earlier sets stay
#: reproducible with ``usnav simulate --seeds 6001-6042 --families <HELD_OUT_REPORT_ORDER>``
#: (or 6501-6542) and ``usnav evaluate``.
HELD_OUT_SEEDS_FULL = tuple(range(6601, 6643))
TUNED_ON_SEEDS_FULL = tuple(range(6101, 6125))
FAMILY_SEEDS_QUICK = (3001,)
FAMILIES_QUICK = ("baseline", "mixed")


def _family_case(ctx: BenchContext, family: str, seed: int) -> Path:
    """A simulated case of an appearance family, cached under the bench work folder."""
    from usnav.sim import SIM_VERSION, make_options, simulate_case

    folder = ctx.work_dir / "registration" / f"sim-v{SIM_VERSION}" / f"{family}-{seed}"
    if not (folder / "truth.json").exists():
        ctx.progress(f"simulating {family} case {seed}")
        simulate_case(seed, folder, make_options(save_anatomy=False, family=family))
    return folder


def family_summary(rows: list[dict]) -> dict:
    """Per-family figures from per-case rows (``error`` of the global (bony) estimate against
    the bony truth — the published one before the tumor stage moved it —, ``accepted``,
    ``error_now`` of the published estimate at the tumor where it is now, ``confident``,
    ``candidate`` error and ``uncertainty``). "Over 2 mm" and ``harm`` read ``error`` (the
    ``_now`` counts read ``error_now``, as the display draws it); the coverage reads
    ``error_now`` (an accepted estimate without a bound is not covered)."""
    err = np.array([r["error"] for r in rows])
    acc = [r for r in rows if r["accepted"]]
    conf = [r for r in rows if r["confident"]]
    # uncertainty_mm bounds the error at the tumor where it is now (cord shift included)
    covered = [
        r for r in acc if r["uncertainty"] is not None and r["uncertainty"] >= r["error_now"]
    ]
    return {
        "cases": len(rows),
        "median_mm": float(np.median(err)),
        "under_2mm": float(np.mean(err < 2.0)),
        "accepted": len(acc),
        "confident": len(conf),
        "accepted_over_2mm": sum(r["error"] > 2.0 for r in acc),
        "confident_over_2mm": sum(r["error"] > 2.0 for r in conf),
        # the same, scored as the display draws it: the published estimate at the tumor now
        "accepted_over_2mm_now": sum(r["error_now"] > 2.0 for r in acc),
        "confident_over_2mm_now": sum(r["error_now"] > 2.0 for r in conf),
        "harm": sum(r["error"] > r["init"] for r in acc),
        "coverage": len(covered) / len(acc) if acc else float("nan"),
        "median_now_mm": float(np.median([r["error_now"] for r in rows])),
        "median_bony_now_mm": float(np.median([r["bony_now"] for r in rows])),
        "under_2mm_now": float(np.mean(np.array([r["error_now"] for r in rows]) < 2.0)),
    }


def family_plan(full: bool) -> list[tuple[str, int]]:
    """(family, seed) of the per-family table: round-robin as ``usnav simulate --seeds``."""
    from usnav.sim import TUNING_FAMILIES
    from usnav.sim.dataset import dataset_plan
    from usnav.sim.families import HELD_OUT_REPORT_ORDER

    if not full:
        return [(f, s) for f in FAMILIES_QUICK for s in FAMILY_SEEDS_QUICK]
    return dataset_plan(TUNED_ON_SEEDS_FULL, TUNING_FAMILIES) + dataset_plan(
        HELD_OUT_SEEDS_FULL, HELD_OUT_REPORT_ORDER
    )


@benchmark("registration per appearance family (tuned-on vs held-out)", "registration")
def bench_families(ctx: BenchContext) -> list[Figure]:
    from usnav.io.volume import load_volume
    from usnav.registration import register_sweep, warm_up
    from usnav.sim import TUNING_FAMILIES, family_names

    warm_up()
    families = family_names() if ctx.full else list(FAMILIES_QUICK)
    rows = []
    for family, seed in family_plan(ctx.full):
        folder = _family_case(ctx, family, seed)
        mri, sweep, _, truth = _load_case(folder)
        ctx.progress(f"registering {family} case {seed}")
        label = load_volume(folder / "tumor_label.nii.gz")
        res = register_sweep(mri, sweep, truth.init_reference_to_mri, tumor_label=label)
        bony = res.bony_estimate
        unc = res.uncertainty_mm if np.isfinite(res.uncertainty_mm) else None
        rows.append(
            {
                "family": family,
                "seed": seed,
                "tuning": family in TUNING_FAMILIES,
                "init": truth.mtre(truth.init_reference_to_mri),
                "error": truth.mtre(bony),
                "error_now": truth.mtre_now(res.reference_to_mri),
                "bony_now": truth.mtre_now(bony),
                "tumor_stage": res.tumor_stage,
                "truth_now": truth.mtre_now(truth.reference_to_mri),
                "candidate": truth.mtre(res.candidate),
                "accepted": bool(res.accepted),
                "confident": bool(res.confident),
                "uncertainty": unc,
                "seconds": res.seconds,
                "reason": res.reason,
            }
        )
    _save(ctx, "registration_families.json", rows)
    figs = []
    for family in families:
        part = [r for r in rows if r["family"] == family]
        f = family_summary(part)
        tag = "tuned-on" if family in TUNING_FAMILIES else "held-out"
        figs.append(
            Figure(
                f"[{tag}] {family}: median error at the tumor now ({f['cases']} cases)",
                f["median_now_mm"],
                "mm",
                higher_is_better=False,
                note=f"{100 * f['under_2mm_now']:.0f} % < 2 mm now; bony truth: median "
                f"{f['median_mm']:.2f} mm, {100 * f['under_2mm']:.0f} % < 2 mm; accepted "
                f"{f['accepted']} (> 2 mm: {f['accepted_over_2mm']}), confident "
                f"{f['confident']} (> 2 mm: {f['confident_over_2mm']}); coverage "
                f"{100 * f['coverage']:.0f} %",
            )
        )
    held = [r for r in rows if not r["tuning"]]
    if held:
        f = family_summary(held)
        held_figs = [
            Figure(
                f"held-out families: median error at the tumor, bony truth ({f['cases']} cases)",
                f["median_mm"],
                "mm",
                target="≤ 1.0 mm",
                met=bool(f["median_mm"] <= 1.0),
                baseline_name="initial",
                baseline_value=float(np.median([r["init"] for r in held])),
                higher_is_better=False,
                note="against the bony truth (the cord shift is not in it)",
            ),
            Figure(
                "held-out families: median error at the tumor now (cord shift included)",
                f["median_now_mm"],
                "mm",
                target="≤ 1.0 mm",
                met=bool(f["median_now_mm"] <= 1.0),
                baseline_name="bony truth",
                baseline_value=float(np.median([r["truth_now"] for r in held])),
                higher_is_better=False,
                note=f"{100 * f['under_2mm_now']:.0f} % < 2 mm now; what a margin overlay is "
                f"off by; without the tumor stage {f['median_bony_now_mm']:.2f} mm; the "
                "baseline is a perfect rigid (bony) registration",
            ),
            Figure(
                "held-out families: cases under 2 mm (bony truth)",
                100 * f["under_2mm"],
                "%",
                target="≥ 95 %",
                met=bool(f["under_2mm"] >= 0.95),
                note=f"a rejected case keeps its initial error; at the tumor now: "
                f"{100 * f['under_2mm_now']:.0f} %",
            ),
            Figure(
                "held-out families: confident (LIVE) estimates more than 2 mm off",
                float(f["confident_over_2mm"]),
                "cases",
                target="0",
                met=f["confident_over_2mm"] == 0,
                higher_is_better=False,
                note=f"{f['confident']} confident of {f['accepted']} accepted; accepted "
                f"(incl. flagged UNCERTAIN) > 2 mm: {f['accepted_over_2mm']}; the published "
                f"estimate at the tumor now > 2 mm: confident {f['confident_over_2mm_now']}, "
                f"accepted {f['accepted_over_2mm_now']}",
            ),
            Figure(
                "held-out families: accepted estimates worse than the start (do no harm)",
                float(f["harm"]),
                "cases",
                target="0",
                met=f["harm"] == 0,
                higher_is_better=False,
                note="the confirmation rejects a large correction the current estimate's own "
                "optimum does not support",
            ),
            Figure(
                "held-out families: uncertainty_mm ≥ error at the tumor now (accepted)",
                100 * f["coverage"],
                "%",
                target="≥ 90 %",
                met=bool(f["coverage"] >= 0.9),
            ),
        ]
        if not ctx.full:
            # one quick case is a smoke test, not the measurement: its "no" on a
            # rejected case read as the held-out median being 5 mm
            held_figs = smoke_only(
                held_figs,
                f"quick: {f['cases']} case(s), not the target's measurement (usnav bench "
                f"--full: {len(HELD_OUT_SEEDS_FULL)} cases)",
            )
        figs += held_figs
    return figs


@benchmark("registration on RESECT Case 24 (real US/MRI, 16 expert landmarks)", "registration")
def bench_resect(ctx: BenchContext) -> list[Figure]:
    if ctx.data_dir is None or not (ctx.data_dir / "resect" / "case24").is_dir():
        return []
    from usnav.registration import warm_up
    from usnav.registration.cases import (
        load_resect_case24,
        random_perturbation,
        regrid_volume,
        slice_sweep,
    )
    from usnav.registration.rigid import SweepRegistration

    warm_up()
    case = load_resect_case24(ctx.data_dir)
    sweep = slice_sweep(case.us, n_frames=150)
    rng = np.random.default_rng(24)
    centre = case.landmarks_reference.mean(axis=0)
    count = 10 if ctx.full else 2
    perturbations = [random_perturbation(rng, centre) for _ in range(count)]
    figs = []
    for label, mri in (("same grid", case.mri), ("MRI re-gridded", regrid_volume(case.mri))):
        if label != "same grid" and not ctx.full:
            continue
        problem = SweepRegistration(mri, sweep, np.eye(4))
        unperturbed = problem.run(np.eye(4))
        errs, secs, accepted, confident, covered = [], [], [], [], []
        for p in perturbations:
            res = problem.run(p)
            errs.append(case.mtre(res.reference_to_mri))
            secs.append(res.seconds)
            accepted.append(res.accepted)
            confident.append(res.confident)
            if res.accepted:
                covered.append(bool(res.uncertainty_mm >= errs[-1]))
        wrong = sum(a and e > 2.0 for a, e in zip(accepted, errs, strict=True))
        live_wrong = sum(c and e > 2.0 for c, e in zip(confident, errs, strict=True))
        figs += [
            Figure(
                f"Case 24 mTRE from 3-8 mm / 3-8° ({label}, median of {count})",
                float(np.median(errs)),
                "mm",
                target="≤ 1.5 mm",
                met=bool(np.median(errs) <= 1.5),
                baseline_name="initial (perturbed)",
                baseline_value=float(np.median([case.mtre(p) for p in perturbations])),
                higher_is_better=False,
                note=f"max {max(errs):.2f} mm; {sum(accepted)} accepted, {wrong} of them "
                f"over 2 mm; rigid floor 0.83 mm; {np.median(secs):.2f} s per 150-frame sweep",
            ),
            Figure(
                f"Case 24 confident (LIVE) estimates more than 2 mm off ({label})",
                float(live_wrong),
                "cases",
                target="0",
                met=live_wrong == 0,
                higher_is_better=False,
                note=f"{sum(confident)} confident of {sum(accepted)} accepted; uncertainty "
                f"≥ error in {sum(covered)} of {len(covered)} accepted",
            ),
            Figure(
                f"Case 24 from the unperturbed alignment ({label})",
                case.mtre(unperturbed.reference_to_mri),
                "mm",
                target="≤ 1.10 mm (no harm)",
                met=case.mtre(unperturbed.reference_to_mri) <= case.mtre(np.eye(4)) + 1e-6,
                baseline_name="navigation alignment",
                baseline_value=case.mtre(np.eye(4)),
                higher_is_better=False,
                note=("accepted" if unperturbed.accepted else "rejected")
                + ("" if unperturbed.confident else " (not confident)")
                + f"; candidate {case.mtre(unperturbed.candidate):.2f} mm",
            ),
        ]
    return figs


# ----------------------------------------------------------------------------- streaming


def _scanning_stream(sweep) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A surgeon scanning back and forth: the sweep forward, backward and forward again as
    (image, ImageToReference, time s) frames, every frame a new one (its own time, 20 Hz), so
    that a worker's window sliding over it shares most of its frames with the previous one, as
    live (frames the worker prepared before are reused only when time, pose and pixels are the
    same)."""
    n = len(sweep)
    order = [*range(n), *range(n - 1, -1, -1), *range(n)]
    return [(sweep.images[i], sweep.image_to_reference[i], 0.05 * k) for k, i in enumerate(order)]


def _window_starts(stream: list) -> tuple[int, range]:
    """(window size, first frame of each window): the worker's window (``window_frames``)
    sliding by its ``min_new_frames`` new frames per update over ``stream``."""
    from usnav.registration.worker import WorkerOptions

    size, step = WorkerOptions().window_frames, WorkerOptions().min_new_frames
    return size, range(0, len(stream) - size + 1, step)


@benchmark(
    "registration streaming: warm update, frame-path latency beside the worker", "registration"
)
def bench_streaming(ctx: BenchContext) -> list[Figure]:
    from usnav.registration import RegistrationWorker, warm_up
    from usnav.registration.worker import WorkerOptions

    warm_up()
    folder = _sim_case(ctx, BENCH_SEEDS_QUICK[0])
    mri, sweep, cal, truth = _load_case(folder)
    stream = _scanning_stream(sweep)
    size, starts = _window_starts(stream)

    def warm_updates(threads: int) -> tuple[RegistrationWorker, list[float]]:
        worker = RegistrationWorker(
            mri, cal, truth.init_reference_to_mri, WorkerOptions(threads=threads)
        )
        worker.update(stream[:size])  # the cold registration: later updates are warm-started
        times = []
        # ten updates: the last one also detects the field of view again (every
        # ``fov_refresh_updates`` = 10 updates), so the max includes it
        for start in starts[1 : WorkerOptions().fov_refresh_updates + 1]:
            t0 = time.perf_counter()
            worker.update(stream[start : start + size])
            times.append(time.perf_counter() - t0)
        return worker, times

    # the worker's default: 1 thread (the other core stays with the frame path)
    worker, times = warm_updates(WorkerOptions().threads)
    warm_ms = float(np.median(times)) * 1e3
    _, times_2 = warm_updates(2)
    frames = 90 if ctx.full else 60
    idle = _frame_path_latency(mri, sweep, frames)
    busy_thread = _frame_path_latency(mri, sweep, frames, worker_thread=(worker, stream))
    busy_process = _frame_path_latency(mri, sweep, frames, process_case=folder)
    return [
        Figure(
            "warm-started streaming update (150-frame window sliding 15 frames)",
            warm_ms,
            "ms",
            target="≤ 50 ms",
            met=warm_ms <= 50.0,
            higher_is_better=False,
            note=f"max {max(times) * 1e3:.0f} ms (of {len(times)}, one of them re-detecting the "
            f"field of view); includes frame preparation and verdict; "
            f"the worker's default {WorkerOptions().threads} thread (with threads = 2: "
            f"{np.median(times_2) * 1e3:.1f} ms); load average {os.getloadavg()[0]:.1f}",
        ),
        Figure(
            "frame path p99 latency, registration thread busy",
            busy_thread[1],
            "ms",
            baseline_name="registration in a separate process",
            baseline_value=busy_process[1],
            higher_is_better=False,
            note=f"idle p99 {idle[1]:.2f} ms; medians idle/thread/process {idle[0]:.2f}/"
            f"{busy_thread[0]:.2f}/{busy_process[0]:.2f} ms; 2 cores",
        ),
    ]


def _frame_work(mri_vol: np.ndarray, pose: np.ndarray, out: np.ndarray) -> None:
    """A stand-in for the per-frame path: reslice the MRI on the frame (nogil kernel) and a
    few numpy operations on the image, as margins/publishing do. ``pose`` is the transposed
    pixel → voxel matrix (rows: du, dv, -, origin; contiguous)."""
    from usnav.registration import _kernels as K

    K.reslice_plane(mri_vol, pose[3, :3], pose[0, :3], pose[1, :3], out, np.float32(0))
    edges = np.abs(np.diff(out, axis=0)).sum()
    _ = (out > edges / out.size).sum()


def _frame_path_latency(
    mri, sweep, frames: int, worker_thread=None, process_case: Path | None = None
) -> tuple[float, float]:
    """(median, p99) ms of the per-frame work paced at 30 Hz, optionally with the registration
    worker computing continuously in a thread or in another process."""
    vol = np.ascontiguousarray(mri.data, dtype=np.float32)
    out = np.zeros((256, 256), np.float32)
    w2v = mri.world_to_voxel
    init = np.eye(4)
    stop = threading.Event()
    thread = None
    proc = None
    if worker_thread is not None:
        worker, stream = worker_thread  # a stream of frames, each with its own time
        size, starts = _window_starts(stream)

        def spin() -> None:
            k = 0
            while not stop.is_set():  # a window sliding over the stream, over and over
                start = starts[k % len(starts)]
                worker.update(stream[start : start + size])
                k += 1

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        time.sleep(0.2)
    if process_case is not None:
        code = textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from usnav.lifeline import follow_parent
            follow_parent()  # the endless load below ends with the bench, even a killed one
            from usnav.bench.bench_registration import (
                _load_case, _scanning_stream, _window_starts)
            from usnav.registration import RegistrationWorker, warm_up
            warm_up()
            mri, sweep, cal, truth = _load_case(Path({str(process_case)!r}))
            w = RegistrationWorker(mri, cal, truth.init_reference_to_mri)
            stream = _scanning_stream(sweep)
            size, starts = _window_starts(stream)
            w.update(stream[:size])
            print("ready", flush=True)
            k = 0
            while True:
                start = starts[k % len(starts)]
                w.update(stream[start : start + size]); k += 1
        """)
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env()
        )
        proc.stdout.readline()
    try:
        latencies = []
        period = 1 / 30
        t_next = time.perf_counter()
        for i in range(frames):
            t_next += period
            pose = np.ascontiguousarray((w2v @ init @ sweep.image_to_reference[i % len(sweep)]).T)
            t0 = time.perf_counter()
            _frame_work(vol, pose, out)
            latencies.append(time.perf_counter() - t0)
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        if proc is not None:
            proc.kill()
            proc.wait(10)
    lat = np.array(latencies) * 1e3
    return float(np.median(lat)), float(np.percentile(lat, 99))


# ----------------------------------------------------------------------------- memory


@benchmark("registration memory: 512³ MRI and a 300-frame sweep", "registration", quick=False)
def bench_memory(ctx: BenchContext) -> list[Figure]:
    folder = _sim_case(ctx, BENCH_SEEDS_QUICK[0])
    work = ctx.work_dir / "registration" / "memory"
    work.mkdir(parents=True, exist_ok=True)
    big_path = work / f"mri512-{folder.name}.nii"
    # make the 512³ MRI in a process of its own: building it must not count in the peak
    make = textwrap.dedent(f"""
        import numpy as np
        from pathlib import Path
        from scipy import ndimage
        from usnav.io.volume import Volume, save_volume
        from usnav.bench.bench_registration import _load_case
        mri, sweep, cal, truth = _load_case(Path({str(folder)!r}))
        big_path = Path({str(big_path)!r})
        if not big_path.exists():
            # the case's MRI at 0.5 mm inside a 512³ int16 volume (256 MB)
            factor = mri.spacing_mm / 0.5
            up = ndimage.zoom(np.asarray(mri.data, np.float32), factor, order=1)
            big = np.zeros((512, 512, 512), np.int16)
            lo = (512 - np.array(up.shape)) // 2
            big[lo[0]:lo[0] + up.shape[0], lo[1]:lo[1] + up.shape[1],
                lo[2]:lo[2] + up.shape[2]] = up.astype(np.int16)
            affine = mri.affine @ np.diag([*(1 / factor), 1.0])
            affine[:3, 3] -= affine[:3, :3] @ lo
            save_volume(Volume(big, affine), big_path)
    """)
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, timeout=900)
    code = textwrap.dedent(f"""
        import json, resource, time
        import numpy as np
        from pathlib import Path
        from usnav.io.volume import load_volume
        from usnav.registration import register_sweep, warm_up
        from usnav.registration.sweep import Sweep
        from usnav.bench.bench_registration import _load_case
        mri, sweep, cal, truth = _load_case(Path({str(folder)!r}))
        warm_up()
        big = load_volume(Path({str(big_path)!r}))
        big.data = np.array(big.data)  # fully in memory, as a compressed .nii.gz would be
        order = list(range(len(sweep))) + list(range(len(sweep) - 1, -1, -1))
        sweep300 = Sweep(sweep.images[order], sweep.image_to_reference[order],
                         np.arange(len(order)) / 30.0)
        t0 = time.perf_counter()
        res = register_sweep(big, sweep300, truth.init_reference_to_mri)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"peak_mb": peak / 1024, "mtre": truth.mtre(res.reference_to_mri),
                          "seconds": time.perf_counter() - t0, "frames": len(sweep300)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [
            Figure(
                "peak memory, 512³ MRI + 300 frames",
                float("nan"),
                "MB",
                higher_is_better=False,
                note=f"failed: {proc.stderr[-300:]}",
            )
        ]
    return [
        Figure(
            "peak memory, 512³ int16 MRI + 300-frame sweep (whole process)",
            doc["peak_mb"],
            "MB",
            target="≤ 2048 MB",
            met=doc["peak_mb"] <= 2048,
            higher_is_better=False,
            note=f"registration {doc['seconds']:.2f} s, mTRE {doc['mtre']:.2f} mm",
        )
    ]


def _save(ctx: BenchContext, name: str, rows: list[dict]) -> None:
    try:
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        (ctx.work_dir / name).write_text(json.dumps(rows, indent=1, default=float))
    except OSError:
        pass
