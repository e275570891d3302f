"""Session 37 (helper "level"): the removed label's fit at a registration's candidate.

For each result of notes/session37_level.py (config A), the similarity (the default metric,
finest level) of ``CandidateReferenceToMri`` against the operated MRI (``--removed`` filled)
and against the preoperative MRI: ``removed_gain`` = operated − preoperative. At the right
level the wound the sweep shows lies where the operated MRI has fluid; one vertebra off it
does not (or only half of it). Also the same at the candidate moved ±one vertebra along the
spine's step (``vertebral_body_posterior[1] − [0]``: uses the truth, diagnostic only).

    python notes/session37_level_removed_fit.py RESULTS.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.operated import operated_mri
from usnav.registration.options import RegistrationOptions
from usnav.registration.search import SweepRegistration
from usnav.registration.sweep import load_sweep


def main(src: Path, dst: Path) -> None:
    done = set()
    if dst.is_file():
        done = {json.loads(ln)["name"] for ln in dst.read_text().splitlines() if ln.strip()}
    for ln in src.read_text().splitlines():
        row = json.loads(ln)
        if row["config"] != "A" or row["status"] != 0 or row["name"] in done:
            continue
        res = json.loads((src.parent / "results" / f"{row['name']}.json").read_text())
        inp = res["inputs"]
        cand = np.asarray(res["CandidateReferenceToMri"])
        mri = load_volume(inp["mri"])
        removed = load_volume(inp["removed"])
        sweep = load_sweep(inp["recording"], load_calibration(inp["calibration"]).image_to_probe)
        opts = RegistrationOptions()
        truth = json.loads((Path(inp["recording"]).parent / "truth.json").read_text())
        vb = np.asarray(truth["landmarks"]["vertebral_body_posterior"])
        step = vb[1] - vb[0]
        out = {"name": row["name"]}
        for tag, vol in (
            ("pre", mri),
            ("op", operated_mri(mri, removed, opts.removed_fill_percentile)),
        ):
            prob = SweepRegistration(vol, sweep, cand, opts)
            sim = prob.level(-1).similarity
            for k, sgn in (("0", 0), ("+", 1), ("-", -1)):
                m = cand.copy()
                m[:3, 3] += sgn * step
                out[f"{tag}{k}"] = float(sim.evaluate(m)[0])
        out["removed_gain"] = out["op0"] - out["pre0"]
        with dst.open("a") as fh:
            fh.write(json.dumps(out) + "\n")
        print(
            json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}),
            flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
