"""Session-15 study of the live registration worker (not shipped; tuning families only).

``python notes/session15.py early OUT.jsonl VARIANTS ROOTS...``
    The worker's first (cold) update on the first k frames of each tuning sweep (k = the
    worker's ``min_frames``, then every ``min_new_frames`` more, until one is accepted), as a
    sweep arriving in the live pipeline offers them. One row per case and variant.
``python notes/session15.py summary OUT.jsonl...``
    Median error of the first accepted estimates, how many > 2 mm, and whether their
    ``uncertainty_mm`` covered the error at the tumor now.
``python notes/session15.py live OUT.jsonl FIRST-LAST VARIANTS``
    Replay → ``LivePipeline`` → ZeroMQ on tuning-family seeds FIRST..LAST (the family cycles
    through the four tuning families), four sweeps each, scored by the safety bench's raw
    subscriber: mean boundary error per sweep, final error at the bone, warm/cold update times.

VARIANTS is JSON: ``{"name": {"full": {...}, "warm": {...}, "worker": {...}}}`` (overrides of
``live_cold_registration_options``, ``streaming_registration_options`` and ``WorkerOptions``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from regstudy import load_family

import usnav.registration.worker as W
from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration import warm_up

TUNE = ("baseline", "trailing-echo", "compressed-gain", "speckle-shadow")


def _worker_options(v: dict, cls=None, **extra) -> W.WorkerOptions:
    full = W.live_cold_registration_options().model_copy(update=v.get("full", {}))
    warm = W.streaming_registration_options().model_copy(update=v.get("warm", {}))
    return (cls or W.WorkerOptions)(full=full, warm=warm, **{**extra, **v.get("worker", {})})


def _round(x: float, n: int = 3) -> float:
    return round(float(x), n)


def early(out_path: str, variants: dict, roots: list[str]) -> None:
    with open(out_path, "a") as out:
        _early(out, variants, roots)


def _early(out, variants: dict, roots: list[str]) -> None:
    warm_up()
    folders = sorted(
        p for root in roots for p in Path(root).iterdir() if (p / "truth.json").exists()
    )
    for folder in folders:
        seed = int(folder.name.rsplit("-", 1)[1])
        mri, sweep, truth, _ = load_family(folder, "base", seed)
        cal = load_calibration(folder / "calibration.toml").image_to_probe
        label = load_volume(folder / "tumor_label.nii.gz")
        frames = list(zip(sweep.images, sweep.image_to_reference, sweep.timestamps, strict=True))
        for name, v in variants.items():
            opts = _worker_options(v)
            init = truth.init_reference_to_mri
            w = W.RegistrationWorker(mri, cal, init, tumor_label=label, options=opts)
            k, tries, first = opts.min_frames, [], None
            while k <= len(frames):
                est = w.update(frames[:k])
                if est is not None:
                    e = {
                        "k": k,
                        "acc": bool(est.accepted),
                        "bony": _round(truth.mtre(est.reference_to_mri)),
                        "now": _round(truth.mtre_now(est.margins_reference_to_mri)),
                        "unc": _round(est.uncertainty_mm, 2),
                        "reason": est.reason[:80],
                    }
                    tries.append(e)
                    if est.accepted:
                        first = e
                        break
                k += opts.min_new_frames
            row = {"v": name, "case": folder.name, "n": len(frames), "first": first}
            row["init_now"] = _round(truth.mtre_now(init), 2)
            row["tries"] = tries
            out.write(json.dumps(row) + "\n")
            out.flush()


def summary(paths: list[str]) -> None:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    for v in dict.fromkeys(r["v"] for r in rows):
        mine = [r for r in rows if r["v"] == v]
        f = [r["first"] for r in mine if r["first"]]
        bony = np.array([x["bony"] for x in f])
        now = np.array([x["now"] for x in f])
        unc = np.array([x["unc"] for x in f])
        print(
            f"{v}: {len(mine)} cases, never accepted {len(mine) - len(f)}; frames until accepted "
            f"median {np.median([x['k'] for x in f]):.0f}; error at the bone median "
            f"{np.median(bony):.2f} mm (> 2 mm: {(bony > 2).sum()}); at the tumor now median "
            f"{np.median(now):.2f} mm; uncertainty ≥ error now {(now <= unc).sum()}/{len(f)}"
        )


def live(out_path: str, seeds: str, variants: dict) -> None:
    with open(out_path, "a") as out:
        _live(out, Path(out_path).parent, seeds, variants)


def _live(out, folder: Path, seeds: str, variants: dict) -> None:
    from usnav.bench import bench_safety as S
    from usnav.bench.registry import BenchContext

    first, last = map(int, seeds.split("-"))
    warm_up()
    ctx = BenchContext(work_dir=folder / "livework")
    original_options, original_update = W.WorkerOptions, W.RegistrationWorker.update
    times: list[tuple[bool, float]] = []

    def timed(self, window):
        warm = self._image_accepted
        t0 = time.perf_counter()
        estimate = original_update(self, window)
        if estimate is not None:
            times.append((warm, time.perf_counter() - t0))
        return estimate

    W.RegistrationWorker.update = timed
    try:
        for seed in range(first, last + 1):
            family = TUNE[(seed - 1) % 4]
            folder, truth = S._simulate(seed, family, ctx.work_dir / "safety", 120)
            for name, v in variants.items():
                W.WorkerOptions = lambda v=v, **kw: _worker_options(v, original_options, **kw)
                times.clear()
                run = S._run_case(ctx, seed, family, 120, files=(folder, truth))
                rows = run.in_view
                per_pass: dict[int, list[float]] = {}
                for r in rows:
                    per_pass.setdefault(r[0], []).append(r[3])
                warm_s = [t for w, t in times if w]
                cold_s = [t for w, t in times if not w]
                nav = [r[3] for r in rows if r[7].startswith("navigation")]
                row = {
                    "v": name,
                    "seed": seed,
                    "family": family,
                    "n": len(rows),
                    "mean": float(np.mean([r[3] for r in rows])) if rows else None,
                    "p95_over2": int(sum(r[2] > 2.0 for r in rows)),
                    "nav": [len(nav), _round(np.mean(nav)) if nav else None],
                    "final": run.final_tre_mm,
                    "est": run.estimates,
                    "adopted": run.adopted,
                    "pass": {k: [_round(np.mean(q)), len(q)] for k, q in sorted(per_pass.items())},
                    "warm_s": [_round(np.median(warm_s)) if warm_s else None, len(warm_s)],
                    "cold_s": [_round(np.median(cold_s)) if cold_s else None, len(cold_s)],
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
    finally:
        W.WorkerOptions, W.RegistrationWorker.update = original_options, original_update


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "early":
        early(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:])
    elif command == "summary":
        summary(sys.argv[2:])
    elif command == "live":
        live(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
