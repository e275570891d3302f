"""Session-28 study (not shipped as is): should the live worker's cold registration climb to a
clearly better pose along the sweep (``sweep_climbs``), as the batch registration does?

The live cold options turned the climb off in session 13, when the live cold search used LC²
at 1 mm (it climbed a tuning case to a pose 23 mm off that the verdict accepted). Since
session 15 the live cold search uses MIND-SSC, the metric the climb was chosen with, and the
session-28 tie study (notes/session28_tie_history.py) found tied tries whose rivals, 0.6-1.2 mm
from the truth, outscored candidates 7-11 mm off by 0.005-0.012 (the verdict's "clearly").

One deterministic fixed-schedule run per case and arm (4 passes), default worker options
except the cold registration's ``sweep_climbs``:

- per frame, the error of the margins' transform (``margins_reference_to_mri``);
- frames whose estimate in use is image-based and more than 2 mm off (a wrong acceptance,
  UNCERTAIN or not), and the worst such error;
- the final estimate's error.

``python notes/session28_live_climb.py WORK_DIR CLIMBS SEED:FAMILY|indep:FAMILY:SEED ...``
prints one JSON line per case (arm ``climb<CLIMBS>``); ``... table WORK_DIR FILE...`` pools
JSON lines written by several runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def run(work_dir: str, climbs: str, *cases: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from session26_rejudge_ab import load_case

    from usnav.pipeline.schedule import replay_fixed_schedule
    from usnav.registration.worker import WorkerOptions, live_cold_registration_options

    full = live_cold_registration_options().model_copy(update={"sweep_climbs": int(climbs)})
    options = WorkerOptions(full=full)
    for case in cases:
        folder, truth, mri, cal, init = load_case(work_dir, case)
        margins, wrong = [], []

        def record(worker, truth=truth, margins=margins, wrong=wrong) -> None:
            in_use = worker.latest_accepted()
            margins.append(truth.mtre(in_use.margins_reference_to_mri))
            if worker._image_accepted:
                err = truth.mtre(in_use.reference_to_mri)
                if err > 2.0:
                    wrong.append(err)

        worker = replay_fixed_schedule(
            folder / "sweep.igs.mha", mri, cal, init, passes=4, options=options, on_frame=record
        )
        row = {
            "case": case,
            "arm": f"climb{climbs}",
            "nav_mm": round(truth.mtre(init), 3),
            "margins_mm": round(float(np.mean(margins)), 4),
            "wrong_frames": len(wrong),
            "wrong_max_mm": round(max(wrong), 2) if wrong else 0.0,
            "final_mm": round(truth.mtre(worker.latest_accepted().reference_to_mri), 3),
            "updates": worker.stats.updates,
        }
        print(json.dumps(row), flush=True)


def table(*files: str) -> None:
    rows = [json.loads(line) for f in files for line in Path(f).read_text().splitlines() if line]
    arms = sorted({r["arm"] for r in rows})
    by = {(r["case"], r["arm"]): r for r in rows}
    cases = sorted({r["case"] for r in rows}, key=lambda c: c.split(":")[-1])
    cases = [c for c in cases if all((c, a) in by for a in arms)]
    print("case".ljust(26) + "".join(f"{a:>26}" for a in arms))
    for c in cases:
        cells = [by[(c, a)] for a in arms]
        print(
            c.ljust(26)
            + "".join(
                f"{r['margins_mm']:9.3f} {r['wrong_frames']:4d}/{r['wrong_max_mm']:5.2f}"
                f" {r['final_mm']:5.2f}"
                for r in cells
            )
        )
    for a in arms:
        sel = [by[(c, a)] for c in cases]
        print(
            f"{a}: {len(sel)} cases, margins {np.mean([r['margins_mm'] for r in sel]):.3f} mm, "
            f"wrong-accepted frames {sum(r['wrong_frames'] for r in sel)} "
            f"(cases {sum(r['wrong_frames'] > 0 for r in sel)}), final mean "
            f"{np.mean([r['final_mm'] for r in sel]):.3f}, final > 2 mm "
            f"{sum(r['final_mm'] > 2 for r in sel)}"
        )
    if len(arms) == 2:
        d = np.array(
            [by[(c, arms[1])]["margins_mm"] - by[(c, arms[0])]["margins_mm"] for c in cases]
        )
        print(
            f"{arms[1]} vs {arms[0]}: better {(d < -0.01).sum()}, worse {(d > 0.01).sum()}, "
            f"worst {d.max():+.2f}, best {d.min():+.2f}"
        )


if __name__ == "__main__":
    if sys.argv[1] == "table":
        table(*sys.argv[3:])
    else:
        run(*sys.argv[1:])
