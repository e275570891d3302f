"""Write a `usnav evaluate` manifest for independent-simulator cases (session 35).

    python manifest.py OUT.csv CASE_DIR [CASE_DIR ...]

Each CASE_DIR is what `sim.py OUT FAMILY SEED` wrote; the truth is its `truth.txt` (the true
ReferenceToMri), scored by `usnav evaluate` at `tumor_label.nii.gz` as `score.py` scores it
(docs/evaluation.md). The site tag is `indep-sim`, so `--ledger` keeps these seeds apart from
usnav-sim's. The cord shift of the `shift` family is not in the truth (`score.py`'s
`*_vs_tumor_truth` columns have it).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main(out: str, cases: list[str]) -> None:
    rows = []
    for folder in map(Path, cases):
        meta = json.loads((folder / "meta.json").read_text())
        rows.append(
            {
                "case": folder.name,
                "recording": folder.resolve() / "sweep.igs.mha",
                "mri": folder.resolve() / "mri.nii.gz",
                "label": folder.resolve() / "tumor_label.nii.gz",
                "calibration": folder.resolve() / "cal.txt",
                "init": folder.resolve() / "init.txt",
                "truth": folder.resolve() / "truth.txt",
                "family": meta["family"],
                "seed": meta["seed"],
                "site": "indep-sim",
            }
        )
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
