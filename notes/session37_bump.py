"""Session 37: the live pipeline when the patient reference is bumped mid-scan.

A case from ``usnav simulate`` (tuning seeds 1801-1830 only) is played ``PASSES`` times in one
recording, written with usnav's own writer; from a chosen frame on its ``ReferenceToTracker``
is moved as PLUS would see a bumped patient reference (the images and the probe's poses stay:
the anatomy did not move, the reference did). The true ``ReferenceToMri`` therefore becomes
``D @ T`` from that frame on (``D`` a rigid motion in MRI space about the tumor centroid),
while tracking stays OK. ``usnav replay`` serves the recording over OpenIGTLink into
``usnav run`` (a site budget that allows LIVE: the ``usnav bench --full --only budget`` row's
second budget), and a ZeroMQ subscriber scores every published margin against the truth with
the bench's scorer (``usnav.bench.bench_safety._score``).

Usage::

    python notes/session37_bump.py prepare CASE_DIR            # truth masks, once per case
    python notes/session37_bump.py run CASE_DIR SCENARIO OUT   # one live run -> OUT.json
    python notes/session37_bump.py report OUT.json [...]       # the figures

Scenarios: ``none`` (control), ``bump`` (3-6 mm / 2-5 deg at the tumor, at the start of pass
``BUMP_PASS``), ``drift`` (0.5 mm/s for 12 s on the recording's clock, then held: at
``RATE`` 0.5 that is 0.25 mm/s for 24 s of scanning), ``drift-fast`` (0.5 mm/s of scanning
for 12 s), ``back`` (the bump, and the reference put back 24 s of scanning later).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PASSES = 12
BUMP_PASS = 3  # the reference moves at the first frame of this pass (0-based)
RATE = 0.5
DRIFT_MM_S = 0.5
DRIFT_FOR_S = 12.0  # recording seconds of drift (file clock); wall clock is / RATE
BACK_AFTER_S = 12.0  # recording seconds (24 s of wall clock at RATE 0.5)

OPTIONS_TOML = """publish_frames = false
[registration_budget]
similarity_bias_mm = 0.5
calibration_error_mm = 0.5
calibration_error_deg = 0.5
[display]
margin_error_mm = 0.0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _case_options(case: Path):
    from usnav.sim.options import make_options

    doc = json.loads((case / "truth.json").read_text())
    return int(doc["seed"]), make_options(**doc["options"])


def prepare(case: Path) -> Path:
    """Per original frame: the true tumor mask and the true ImageToMri (the simulator's,
    rebuilt from the seed and options; checked against the recording's first frame pose)."""
    from usnav.margins import _kernels
    from usnav.sim.case import build_case
    from usnav.sim.tissues import Tissue

    seed, options = _case_options(case)
    built = build_case(seed, options)
    intra, sweep = built.intraop, built.sweep
    codes = np.zeros(intra.labels.shape, np.uint8)
    codes[(intra.labels == Tissue.TUMOR) | (intra.labels == Tissue.CYST)] = 1
    mri_to_voxel = np.linalg.inv(built.anatomy.spine_to_mri @ intra.index_to_spine())
    rows, cols = built.geometry.rows, built.geometry.cols
    masks = np.zeros((len(sweep.frame_numbers), rows, cols), bool)
    for i in range(len(sweep.frame_numbers)):
        fractions = np.zeros((1, rows, cols), np.float32)
        _kernels.reslice_label_fractions(
            codes, mri_to_voxel @ sweep.true_image_to_mri[i], 1, fractions
        )
        masks[i] = fractions[0] >= 0.5
    out = case / "bump_truth.npz"
    np.savez_compressed(
        out,
        numbers=np.asarray(sweep.frame_numbers),
        masks=masks,
        true_image_to_mri=np.asarray(sweep.true_image_to_mri),
    )
    return out


def motion(scenario: str, seed: int, centroid: np.ndarray):
    """(function of recording seconds since the bump -> D (4x4, MRI mm), description)."""
    from usnav.bench.bench_bump import draw_bump, rigid_about

    bump = draw_bump(seed, centroid)  # the bench's draw (session 38 moved it there)
    mm, deg = bump.mm, bump.deg

    def rigid(t_mm: float, r_deg: float) -> np.ndarray:
        return rigid_about(centroid, bump.axis, bump.direction, t_mm, r_deg)

    if scenario == "none":
        return (lambda s: np.eye(4)), "no motion"
    if scenario == "bump":
        return (lambda s: rigid(mm, deg) if s >= 0 else np.eye(4)), f"bump {mm:.1f} mm, {deg:.1f}°"
    if scenario == "drift":

        def drift(s: float) -> np.ndarray:
            return rigid(DRIFT_MM_S * min(max(s, 0.0), DRIFT_FOR_S), 0.0)

        return drift, f"drift {DRIFT_MM_S} mm/s for {DRIFT_FOR_S / RATE:.0f} s wall"
    if scenario == "drift-fast":  # 0.5 mm/s of scanning time at RATE 0.5: 6 mm in 12 s

        def fast(s: float) -> np.ndarray:
            return rigid(2 * DRIFT_MM_S * min(max(s, 0.0), DRIFT_FOR_S / 2), 0.0)

        return fast, f"drift {2 * DRIFT_MM_S * RATE} mm/s for {DRIFT_FOR_S / 2 / RATE:.0f} s wall"
    if scenario == "back":

        def back(s: float) -> np.ndarray:
            return rigid(mm, deg) if 0 <= s < BACK_AFTER_S else np.eye(4)

        return back, f"bump {mm:.1f} mm, {deg:.1f}°, back after {BACK_AFTER_S / RATE:.0f} s wall"
    raise SystemExit(f"unknown scenario {scenario!r}")


def make_recording(case: Path, scenario: str, out: Path) -> dict:
    """Write the PASSES-long recording with the reference moved; return its timeline."""
    from usnav.bench.bench_bump import breathing_motion, bumped_reference_to_tracker
    from usnav.frames import TrackedFrame, TrackedTransform
    from usnav.io.sequence_reader import read_sequence
    from usnav.io.sequence_writer import write_sequence
    from usnav.sim import load_truth

    truth = load_truth(case)
    seed, _ = _case_options(case)
    centroid = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(3)
    # session 39: "breath-A-P" or "SCENARIO+breath-A-P": the whole patient (reference, probe on
    # it and anatomy) breathes A mm peak to peak every P s of scanning against the tracker
    parts = scenario.split("+")
    breath = next((part for part in parts if part.startswith("breath-")), None)
    scenario = next((part for part in parts if not part.startswith("breath-")), "none")
    move, description = motion(scenario, seed, centroid)
    t_true = truth.reference_to_mri
    breathe = None
    breath_mm_s = None
    if breath is not None:
        _, amplitude, period = breath.split("-")
        description += f", breathing {amplitude} mm p-p every {period} s"
        breath_mm_s = (float(amplitude), float(period) * RATE)  # period on the recording clock
    seq = read_sequence(case / "sweep.igs.mha")
    frames = [seq.frame(i) for i in range(len(seq))]
    seq.close()
    if breath_mm_s is not None:
        r2t0 = frames[0].transforms["ReferenceToTracker"].matrix
        breathe = breathing_motion(*breath_mm_s, r2t0, t_true)
    numbers = [f.frame_number for f in frames]
    first, span = min(numbers), max(numbers) - min(numbers) + 1
    times = np.array([f.t_device for f in frames])
    dt = float(np.median(np.diff(times)))
    period = times[-1] - times[0] + dt
    t_bump = times[0] + BUMP_PASS * period
    truth_by_index: list[list[float]] = []

    def generate():
        for p in range(PASSES):
            for f in frames:
                t = f.t_device + p * period
                d = move(t - t_bump)
                transforms = dict(f.transforms)
                r2t = transforms["ReferenceToTracker"]
                moved = bumped_reference_to_tracker(r2t.matrix, t_true, d)
                transforms["ReferenceToTracker"] = TrackedTransform(moved, r2t.status)
                if breathe is not None:
                    b = breathe(t - times[0])
                    for name in ("ReferenceToTracker", "ProbeToTracker"):
                        tt = transforms[name]
                        transforms[name] = TrackedTransform(b @ tt.matrix, tt.status)
                truth_by_index.append((d @ t_true).ravel().tolist())
                yield TrackedFrame(
                    f.image,
                    transforms,
                    t_device=t,
                    frame_number=f.frame_number + p * span,
                    orientation=f.orientation,
                    image_ok=f.image_ok,
                    fields=dict(f.fields),
                )

    write_sequence(out, generate(), compression_level=1)
    return {
        "scenario": scenario,
        "description": description,
        "first": first,
        "span": span,
        "frames_per_pass": len(frames),
        "t0": float(times[0]),
        "period_s": float(period),
        "t_bump": float(t_bump),
        "true_reference_to_mri": truth_by_index,
    }


def run(case: Path, scenario: str, out: Path, *, extra_options: str = "") -> None:
    from usnav.bench.bench_safety import _score
    from usnav.client import MarginMessage, RegistrationMessage, Subscriber
    from usnav.sim import load_truth

    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_suffix("")
    work.mkdir(exist_ok=True)
    recording = work / "bumped.igs.mha"
    if recording.exists():
        recording.unlink()
    timeline = make_recording(case, scenario, recording)
    prepared = np.load(case / "bump_truth.npz")
    mask_of = {int(n): m for n, m in zip(prepared["numbers"], prepared["masks"], strict=True)}
    true_i2m = {
        int(n): m for n, m in zip(prepared["numbers"], prepared["true_image_to_mri"], strict=True)
    }
    truth = load_truth(case)
    tumor_pts = truth.points()
    true_r2m = np.array(timeline["true_reference_to_mri"]).reshape(-1, 4, 4)
    # top-level keys of the extra options go before the tables (session 38)
    top, table, rest = extra_options.partition("[")
    (work / "run.toml").write_text(top + OPTIONS_TOML + table + rest)
    igtl, pub = _free_port(), _free_port()
    (work / "device.toml").write_text(
        f'[probe]\nport = {igtl}\ntransforms = ["ProbeToTracker", "ReferenceToTracker"]\n'
    )
    env = dict(os.environ)
    py = sys.executable
    files = contextlib.ExitStack()
    replay_err = files.enter_context(open(work / "replay.err", "w"))  # noqa: SIM115
    run_out = files.enter_context(open(work / "run.out", "w"))  # noqa: SIM115
    run_err = files.enter_context(open(work / "run.err", "w"))  # noqa: SIM115
    wall = PASSES * timeline["period_s"] / RATE
    replay = subprocess.Popen(
        [py, "-m", "usnav", "replay", str(recording), "--port", str(igtl), "--rate", str(RATE),
         "--calibration", str(case / "calibration.toml")],
        env=env, stdout=subprocess.DEVNULL, stderr=replay_err,
    )  # fmt: skip
    endpoint = f"tcp://127.0.0.1:{pub}"
    runner = subprocess.Popen(
        [py, "-m", "usnav", "run", "--device", str(work / "device.toml"),
         "--mri", str(case / "mri.nii.gz"), "--label", str(case / "tumor_label.nii.gz"),
         "--calibration", str(case / "calibration.toml"),
         "--init", str(case / "init_ReferenceToMri.txt"), "--options", str(work / "run.toml"),
         "--publish", endpoint, "--duration", f"{wall + 8:.0f}", "--quiet",
         "--log", str(work / "run.log"), "--force"],
        env=env, stdout=run_out, stderr=run_err,
    )  # fmt: skip
    margins: list[dict] = []
    registrations: list[dict] = []
    stop = threading.Event()
    first, span = timeline["first"], timeline["span"]
    n = timeline["frames_per_pass"]

    def collect() -> None:
        with Subscriber(endpoint, hwm=100_000) as sub:
            while not stop.is_set():
                message = sub.receive(0.05)
                if isinstance(message, RegistrationMessage) and not message.resent:
                    h = message.header
                    registrations.append(
                        {
                            "t_arrived": h.t_arrived,
                            "sequence": message.estimate_sequence,
                            "in_use": message.in_use,
                            "source": message.source,
                            "uncertainty_mm": message.uncertainty_mm,
                            "similarity": message.similarity,
                            "reason": message.reason,
                            "reference_to_mri": message.reference_to_mri.ravel().tolist(),
                            "display_state": h.display_state,
                        }
                    )
                elif isinstance(message, MarginMessage):
                    h = message.header
                    sweep, offset = divmod(h.frame_number - first, span)
                    index = sweep * n + offset  # frame numbers are consecutive in the sweep
                    number = first + offset
                    row = {
                        "frame": h.frame_number,
                        "index": index,
                        "pass": sweep,
                        "t_received": h.t_received,
                        "t_device": h.t_device,
                        "state": h.display_state,
                        "reason": h.display_reason,
                        "registration_sequence": message.registration_sequence,
                        "checked": h.registration_checked,
                        "uncertainty_mm": h.uncertainty_mm,
                        "age_s": h.age_s,
                        "in_view": message.in_view,
                        "stale": h.stale,
                    }
                    mask = mask_of.get(number)
                    if message.in_view and mask is not None and mask.any():
                        p95, mean, mri_mean = _score(message, mask)
                        row.update(p95=p95, mean=mean, mri_mean=mri_mean)
                    if h.image_to_mri is not None and np.all(np.isfinite(h.image_to_mri)):
                        # the error of the transform the margins were drawn with, at the
                        # tumor landmarks: where the drawn MRI puts a pixel vs. where it is
                        m = h.image_to_mri @ np.linalg.inv(true_i2m[number])
                        err = np.linalg.norm(tumor_pts @ m[:3, :3].T + m[:3, 3] - tumor_pts, axis=1)
                        row["tumor_error_mm"] = float(err.mean())
                    margins.append(row)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        runner.wait(timeout=wall + 400)
    finally:
        stop.set()
        collector.join(5)
        for proc in (runner, replay):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        files.close()
    # each estimate's error against the truth of the frames it was computed from (the truth
    # at the newest frame received when it arrived)
    received = [(m["t_received"], m["index"]) for m in margins if m["t_received"] is not None]
    for reg in registrations:
        before = [i for t, i in received if t <= reg["t_arrived"]]
        i = max(before) if before else 0
        i = min(i, len(true_r2m) - 1)
        e = np.array(reg["reference_to_mri"]).reshape(4, 4)
        m = e @ np.linalg.inv(true_r2m[i])
        err = np.linalg.norm(tumor_pts @ m[:3, :3].T + m[:3, 3] - tumor_pts, axis=1)
        reg["frame_index"] = i
        reg["error_mm"] = float(err.mean())
    timeline.pop("true_reference_to_mri")
    result = {
        "case": str(case),
        "timeline": timeline,
        "bump_index": BUMP_PASS * n,
        "return_code": runner.returncode,
        "margins": margins,
        "registrations": registrations,
    }
    out.write_text(json.dumps(result))


def summarise(path: Path) -> dict:
    """The figures of one run."""
    doc = json.loads(path.read_text())
    rows = doc["margins"]
    k = doc["bump_index"]
    tl = doc["timeline"]
    n = tl["frames_per_pass"]
    back_index = k + round(BACK_AFTER_S / tl["period_s"] * n) if tl["scenario"] == "back" else None
    by_index = {r["index"]: r for r in rows}
    t_bump = next(
        (r["t_received"] for r in sorted(rows, key=lambda r: r["index"]) if r["index"] >= k), None
    )
    scored = [r for r in rows if "p95" in r]
    before = [r for r in scored if r["index"] < k]
    after = [r for r in scored if r["index"] >= k]
    live_bad_after = [r for r in after if r["state"] == "LIVE" and r["p95"] > 2.0]
    live_bad_before = [r for r in before if r["state"] == "LIVE" and r["p95"] > 2.0]
    live_after = [r for r in after if r["state"] == "LIVE"]
    # the estimate in use at the bump, and how long margins drawn with it stayed LIVE
    at_bump = by_index.get(k) or next((r for r in rows if r["index"] >= k), None)
    seq0 = at_bump["registration_sequence"] if at_bump else None
    stale_est = [r for r in rows if r["index"] >= k and r["registration_sequence"] == seq0]
    last_live_old = max((r["t_received"] for r in stale_est if r["state"] == "LIVE"), default=None)
    last_old = max((r["t_received"] for r in stale_est), default=None)
    regs = [g for g in doc["registrations"] if g["frame_index"] >= k]
    adopted = [g for g in regs if g["in_use"]]
    fixed = next((g for g in adopted if g["error_mm"] < 2.0), None)
    first_live_bad = min((r["t_received"] for r in live_bad_after), default=None)
    last_live_bad = max((r["t_received"] for r in live_bad_after), default=None)

    def rel(t):
        return None if t is None or t_bump is None else round(t - t_bump, 1)

    reasons: dict[str, int] = {}
    for r in after:
        if r["state"] != "LIVE":
            key = r["reason"].split(":")[0][:50]
            reasons[key] = reasons.get(key, 0) + 1
    contra = [r for r in rows if r["reason"].startswith("registration contradicted")]
    contra_after = [r for r in contra if r["index"] >= k]
    contra_scored = [r for r in contra if "p95" in r]
    # what the rule cost: contradicted margins that would otherwise have been LIVE (an upper
    # bound: the seen-points doubt, which comes after it, is not restated)
    would_live = [r for r in contra_scored if (r["age_s"] or 0.0) <= 60.0]
    swept = [r for r in scored if r["pass"] >= 2]
    episodes = 0
    previous = False
    for r in sorted(rows, key=lambda r: r["index"]):
        now = r["reason"].startswith("registration contradicted")
        episodes += int(now and not previous)
        previous = now
    return {
        "run": path.stem,
        "contradicted_margins": len(contra),
        "contradicted_after_bump": len(contra_after),
        "contradicted_episodes": episodes,
        "first_contradicted_s": rel(min((r["t_received"] for r in contra_after), default=None)),
        "contradicted_in_view": len(contra_scored),
        "contradicted_in_view_p95_gt2": sum(r["p95"] > 2.0 for r in contra_scored),
        "contradicted_would_be_live": len(would_live),
        "coverage_after_2_sweeps_pct": round(
            100 * sum(r["state"] == "LIVE" for r in swept) / max(1, len(swept)), 1
        ),
        "live_bad_total": sum(r["state"] == "LIVE" and r["p95"] > 2.0 for r in scored),
        "in_view_total": len(scored),
        "scenario": tl["scenario"],
        "motion": tl["description"],
        "rc": doc["return_code"],
        "in_view_before": len(before),
        "live_before_pct": round(
            100 * sum(r["state"] == "LIVE" for r in before) / max(1, len(before))
        ),
        "live_bad_before": len(live_bad_before),
        "in_view_after": len(after),
        "live_after": len(live_after),
        "live_bad_after": len(live_bad_after),
        "first_live_bad_s": rel(first_live_bad),
        "last_live_bad_s": rel(last_live_bad),
        "estimate_at_bump": seq0,
        "old_estimate_last_live_s": rel(last_live_old),
        "old_estimate_last_used_s": rel(last_old),
        "first_corrected_adopted_s": rel(fixed["t_arrived"]) if fixed else None,
        "adopted_after": [(rel(g["t_arrived"]), round(g["error_mm"], 2)) for g in adopted],
        "tries_after": len(regs),
        "mean_after": round(float(np.mean([r["mean"] for r in after])), 2) if after else None,
        "mean_before": round(float(np.mean([r["mean"] for r in before])), 2) if before else None,
        "not_live_reasons_after": reasons,
        "back_index": back_index,
    }


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "prepare":
        for case in argv[1:]:
            print(prepare(Path(case)))
    elif command == "run":
        extra = Path(argv[4]).read_text() if len(argv) > 4 else ""
        t = time.monotonic()
        run(Path(argv[1]), argv[2], Path(argv[3]), extra_options=extra)
        print(f"{argv[3]}: {time.monotonic() - t:.0f} s")
    elif command == "report":
        for path in argv[1:]:
            print(json.dumps(summarise(Path(path))))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
