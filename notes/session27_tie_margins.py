"""Session-27 study (not shipped): what margins should be drawn with while every image-based
try so far was rejected as a tie (a distinct pose scores within ``ambiguity_min_gain`` of the
candidate)?

One deterministic run per case (``replay_fixed_schedule``, 4 passes), the error of the margins'
transform recorded after every frame under several rules, counterfactually (the margins'
transform does not change what the worker does next: later tries start from
``reference_to_mri``):

- ``shipped``: session 26's worker (``margins_from_tied_candidate`` off): the estimate in
  use's ``margins_reference_to_mri`` (the navigation registration, or its correction across
  the sweep after a tie along the sweep only);
- ``cand``: the tied candidate itself, whatever the tie;
- ``k<x>``: the candidate when every tied rival lies within x × the candidate's correction
  (distance from the estimate in use, FOV mean) of it, else ``shipped``;
- ``nk<x>``: as ``k<x>``, only where ``shipped`` has no correction across the sweep (a tie
  along the image too: the navigation registration itself);
- ``cent``: the rigid fit to the mean position of the field of view under the candidate and
  its tied rivals (the centre of the tie set); ``centk<x>``: that under k<x>'s condition.

Also prints every tie event (candidate / rivals / navigation errors and distances).

``python notes/session27_tie_margins.py WORK_DIR SEED:FAMILY|indep:FAMILY:SEED ...``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KS = (0.25, 0.5, 0.75, 1.0)
LAST: dict = {}


def _rigid_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4×4 least-squares rigid transform taking src points to dst points (Kabsch)."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = cd - r @ cs
    return m


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


def _patch() -> None:
    from usnav.registration import search as S
    from usnav.registration.pose import mean_displacement

    original_ambiguity = S.SweepRegistration._ambiguity
    original_probes = S.SweepRegistration._sweep_probes
    original_run = S.SweepRegistration.run

    def probes(self, candidate):
        poses, total = original_probes(self, candidate)
        LAST["probes"] = poses
        return poses, total

    def ambiguity(self, candidate, similarity, scores, pts):
        LAST["probes"] = []
        out = original_ambiguity(self, candidate, similarity, scores, pts)
        sim = self.level(-1).similarity
        tied = []
        for other, _offset, axis in LAST["probes"]:
            d = mean_displacement(other, candidate, pts)
            if not d > self.options.ambiguity_distinct_mm:
                continue
            gain = similarity - sim(other)
            if gain < self.options.ambiguity_min_gain:
                tied.append((other, d, gain, axis))
        LAST["tied"] = tied
        LAST["pts"] = pts
        return out

    def run(self, initial, **kw):
        LAST["tied"] = []
        result = original_run(self, initial, **kw)
        LAST["result"] = result
        LAST["warm"] = kw.get("warm", False)
        LAST["pts_run"] = self.verdict_points()
        return result

    S.SweepRegistration._ambiguity = ambiguity
    S.SweepRegistration._sweep_probes = probes
    S.SweepRegistration.run = run


def _case(folder: Path, mri, cal, init, truth, label: str) -> dict:
    from usnav.pipeline.schedule import replay_fixed_schedule
    from usnav.registration.pose import mean_displacement

    rules = (
        ["shipped", "cand", "cent"]
        + [f"k{k}" for k in KS]
        + [f"centk{k}" for k in KS]
        + [f"nk{k}" for k in KS]
    )
    errors: dict[str, list[float]] = {r: [] for r in rules}
    state: dict = {"updates": 0, "tie": None}
    events: list[dict] = []

    def record(worker) -> None:
        in_use = worker.latest_accepted()
        shipped = in_use.margins_reference_to_mri
        if worker.stats.updates != state["updates"]:
            state["updates"] = worker.stats.updates
            result = LAST["result"]
            if worker._image_accepted:
                state["tie"] = None
            elif not result.accepted:
                state["tie"] = None
                if result.only_tied and LAST["tied"]:
                    pts = LAST["pts_run"]
                    cand = result.candidate
                    current = in_use.reference_to_mri
                    corr = mean_displacement(cand, current, pts)
                    spread = max(d for _, d, _, _ in LAST["tied"])
                    mean_pts = np.mean(
                        [_apply(cand, pts)] + [_apply(o, pts) for o, *_ in LAST["tied"]], axis=0
                    )
                    cent = _rigid_fit(pts, mean_pts)
                    state["tie"] = (cand, cent, spread / max(corr, 1e-9))
                    events.append(
                        {
                            "frame": len(errors["shipped"]),
                            "cand_mm": round(truth.mtre(cand), 2),
                            "cent_mm": round(truth.mtre(cent), 2),
                            "shipped_mm": round(truth.mtre(shipped), 2),
                            "nav_mm": round(truth.mtre(current), 2),
                            "corr_mm": round(corr, 2),
                            "rivals": [
                                (round(truth.mtre(o), 2), round(d, 2), round(g, 4), a)
                                for o, d, g, a in LAST["tied"]
                            ],
                        }
                    )
        tie = state["tie"]
        for r in rules:
            m = shipped
            if tie is not None:
                cand, cent, ratio = tie
                if r == "cand":
                    m = cand
                elif r == "cent":
                    m = cent
                elif r.startswith(("k", "nk")) and ratio <= float(r.lstrip("nk")):
                    no_across = shipped is in_use.reference_to_mri
                    m = cand if r[0] == "k" or no_across else m
                elif r.startswith("centk") and ratio <= float(r[5:]):
                    m = cent
            errors[r].append(truth.mtre(m))

    from usnav.registration.worker import WorkerOptions

    # session 26's worker: "shipped" is what it drew; nk0.5 is the tied-candidate rule built
    # from this study (WorkerOptions.margins_from_tied_candidate)
    old = WorkerOptions(margins_from_tied_candidate=False)
    replay_fixed_schedule(
        folder / "sweep.igs.mha", mri, cal, init, passes=4, options=old, on_frame=record
    )
    return {
        "case": label,
        "nav_mm": round(truth.mtre(init), 2),
        **{r: round(float(np.mean(v)), 3) for r, v in errors.items()},
        "events": events,
    }


def main(work_dir: str, *cases: str) -> None:
    _patch()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from session26_rejudge_ab import load_case

    for case in cases:
        folder, truth, mri, cal, init = load_case(work_dir, case)
        print(json.dumps(_case(folder, mri, cal, init, truth, case)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
