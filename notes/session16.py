"""Session-16 study: which ultrasound-refined margin points should be shown as "seen"
(not shipped; tuning families only).

``python notes/session16.py collect OUT_FOLDER FIRST-LAST``
    Replay → ``LivePipeline`` → ZeroMQ on tuning-family seeds FIRST..LAST (the family cycles
    through the four tuning families; the safety bench's case, pace and four sweeps), with the
    shipped defaults. Per in-view margin message, every tissue-facing point's published
    confidence and disagreement, and the true boundary error of the ultrasound's point and of
    the MRI's point: ``OUT_FOLDER/s{seed}.npz``.
``python notes/session16.py policies OUT_FOLDER...``
    The mean boundary error over all in-view margins (the safety bench's accuracy figure) had
    each message shown its points under other "seen" rules, computed from the same points:
    MRI only, the shipped rule (confidence ≥ 0.5), other thresholds, a cap on the
    disagreement, refinement only with an image-based (or only with the navigation)
    registration.

The margins never feed the registration, so the policies can be compared offline on the
same messages, exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TUNE = ("baseline", "trailing-echo", "compressed-gain", "speckle-shadow")


def collect(out_folder: str, seeds: str) -> None:
    from usnav.bench import bench_safety as S
    from usnav.bench.registry import BenchContext
    from usnav.margins.evaluate import sample_at, signed_distance_image
    from usnav.registration import warm_up

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    first, last = map(int, seeds.split("-"))
    warm_up()
    ctx = BenchContext(work_dir=out / "work")
    for seed in range(first, last + 1):
        family = TUNE[(seed - 1) % 4]
        files = S._simulate(seed, family, ctx.work_dir / "safety", 120)
        run = S._run_case(ctx, seed, family, 120, files=files)
        truth = files[1]
        per_point: dict[str, list] = {k: [] for k in ("msg", "conf", "dis", "e_obs", "e_pred")}
        meta: dict[str, list] = {k: [] for k in ("sweep", "image_reg", "unc", "mean", "mri")}
        for m, row in enumerate(run.in_view):
            message = row[8]
            sd = signed_distance_image(truth[message.header.frame_number], message.spacing_mm)
            for contour in message.contours:
                keep = contour.faces_tissue
                e_obs = np.abs(sample_at(sd, contour.observed_px))[keep]
                e_pred = np.abs(sample_at(sd, contour.predicted_px))[keep]
                per_point["msg"].append(np.full(e_obs.size, m))
                per_point["conf"].append(contour.confidence[keep])
                per_point["dis"].append(contour.disagreement_mm[keep])
                per_point["e_obs"].append(e_obs)
                per_point["e_pred"].append(e_pred)
            h = message.header
            meta["sweep"].append(row[0])
            meta["image_reg"].append(bool(h.registration_checked))
            meta["unc"].append(np.nan if h.uncertainty_mm is None else h.uncertainty_mm)
            meta["mean"].append(row[3])
            meta["mri"].append(row[4])
        np.savez(
            out / f"s{seed}.npz",
            family=family,
            final_tre_mm=run.final_tre_mm,
            **{k: np.concatenate(v) for k, v in per_point.items()},
            **{k: np.asarray(v) for k, v in meta.items()},
        )
        print(
            f"{seed} {family}: {len(run.in_view)} in view, mean {np.mean(meta['mean']):.3f} "
            f"MRI-only {np.mean(meta['mri']):.3f} mm, final {run.final_tre_mm:.2f} mm",
            flush=True,
        )


def _policy_mean(d, seen: np.ndarray) -> np.ndarray:
    """Per message: mean over its points of the shown error under ``seen``."""
    ok = np.isfinite(d["e_obs"]) & np.isfinite(d["e_pred"])
    shown = np.where(seen & ok, d["e_obs"], d["e_pred"])
    n = len(d["sweep"])
    fin = np.isfinite(shown)
    s = np.bincount(d["msg"][fin], shown[fin], minlength=n)
    c = np.bincount(d["msg"][fin], minlength=n)
    return s / np.maximum(c, 1)


def policies(folders: list[str]) -> None:
    cases = [dict(np.load(p)) for f in folders for p in sorted(Path(f).glob("s*.npz"))]

    def rules(d):
        conf, dis = d["conf"], np.abs(d["dis"])
        image = d["image_reg"][d["msg"]]
        yield "MRI only", np.zeros_like(conf, bool)
        for t in (0.5, 0.6, 0.7, 0.8):
            yield f"confidence >= {t}", conf >= t
        for cap in (0.5, 1.0, 1.5, 2.0):
            yield f"conf >= 0.5, |dis| <= {cap}", (conf >= 0.5) & (dis <= cap)
        yield "conf >= 0.5, image-based reg only", (conf >= 0.5) & image
        yield "conf >= 0.5, navigation reg only", (conf >= 0.5) & ~image

    table: dict[str, list[tuple[float, int, float, float]]] = {}
    for d in cases:
        image = d["image_reg"].astype(bool)
        for name, seen in rules(d):
            per_msg = _policy_mean(d, seen)
            table.setdefault(name, []).append(
                (
                    float(per_msg.sum()),
                    per_msg.size,
                    float(per_msg[image].mean()) if image.any() else np.nan,
                    float(per_msg[~image].mean()) if (~image).any() else np.nan,
                )
            )
    print(f"{len(cases)} cases, {sum(len(d['sweep']) for d in cases)} in-view margins")
    print("rule | mean over all margins | image-based reg (case mean) | navigation reg")
    for name, rows in table.items():
        total = sum(r[0] for r in rows) / sum(r[1] for r in rows)
        print(
            f"{name:36s} {total:.3f}  {np.nanmean([r[2] for r in rows]):.3f}  "
            f"{np.nanmean([r[3] for r in rows]):.3f}  per case "
            + " ".join(f"{r[0] / max(r[1], 1):.2f}" for r in rows)
        )


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "policies":
        policies(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
