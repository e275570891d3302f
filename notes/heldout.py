"""Run the registration (current defaults) on simfam family cases as they appear."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, "notes")
from regstudy import run_case

from usnav.registration import warm_up

warm_up()
root = Path(sys.argv[1])
fams = sys.argv[2].split(",")
seeds = [int(s) for s in sys.argv[3].split(",")]
for s in seeds:
    for f in fams:
        folder = root / f"{f}-{s}"
        while not (folder / "truth.json").exists():
            time.sleep(10)
        time.sleep(2)
        row = run_case(folder, "sf:" + f, s)
        print(
            json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
            flush=True,
        )
