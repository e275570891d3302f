"""Session 33, report only: the frames the margin score leaves out.

Re-scores the margins of session 32's held-out registrations (seeds 7427-7454, the
``usnav evaluate --no-margins`` run of notes/session-32-speed.md) with the published
ReferenceToMri and with the bony truth: frames scored, drawn without a tumor, missing one, and
the mean boundary error. Usage: ``python session33_margin_frames.py DATASET EVAL_RESULTS``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from usnav.evaluate.margins_file import margins_of_recording, score_against_simulator
from usnav.sim import load_truth


def main(data: Path, results: Path) -> None:
    with (results / "results.csv").open(newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    with (data / "manifest.csv").open(newline="") as f:
        manifest = list(csv.DictReader(f))
    print("case accepted error_now | published: scored drawn-without missed mean | bony truth: …")
    for m in manifest:
        row = rows.get(m["case"])
        if row is None or row["status"] != "ok":
            continue
        with (results / "cases" / m["case"] / "result.json").open() as f:
            published = np.array(json.load(f)["ReferenceToMri"])
        truth = load_truth(data / m["truth"])
        line = [m["case"], row["accepted"], row["error_now_mm"]]
        for matrix in (published, truth.reference_to_mri):
            records = list(
                margins_of_recording(
                    data / m["recording"], data / m["label"], data / m["calibration"], matrix
                )
            )
            score = score_against_simulator(records, data / m["truth"], matrix)
            errors = score.boundary.refined_mm
            mean = float(errors.mean()) if errors.size else float("nan")
            line += [score.scored_frames, score.drawn_without_tumor, score.missed_tumor]
            line.append(round(mean, 3))
        print(*line, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
