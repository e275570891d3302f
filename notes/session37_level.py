"""Session 37 (helper "level"): a start one vertebra off, with the tumor and removed labels.

For each simulated case (a folder of ``usnav simulate``) three starts are made:
``ordinary`` (the case's own ``init_ReferenceToMri.txt``, 4–8 mm / 3–8° off) and ``level+`` /
``level-``: that init moved by one vertebra along the spine (``vertebral_body_posterior[1] −
[0]`` of truth.json, 22–26 mm), i.e. ``T(−step) · init`` — the same start as moving the MRI's
world (and its labels) by ``T(step)``, as notes/session37_honest.py did, without rewriting
the MRI. Each start runs ``usnav register REC --mri --calibration --init --label --removed``
(the labels ``usnav simulate`` writes) under one or more option files:

- ``A``: the defaults (question 1 of the brief);
- ``B``: ``ambiguity_offsets_mm = [6, 9, 22, 25]``: the ambiguity probes (and the climb that
  follows a better probe) also look one vertebra up and down (the level check measured).

Scored with the truth: ``error_now_mm`` (:meth:`usnav.sim.CaseTruth.mtre_now`) of the
published ``ReferenceToMri``, of ``CandidateReferenceToMri`` and of the initial pose.

Usage (PATH with the venv, PYTHONPATH the worktree)::

    python notes/session37_level.py run OUT.jsonl CONFIGS CASE_DIR [CASE_DIR ...]
        # CONFIGS like A,B; a case dir may end in :+ or :- to run only that wrong-level sign
        # (and no ordinary start)
    python notes/session37_level.py table OUT.jsonl
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from usnav.sim.truth import load_truth

CONFIGS = {
    "A": "",
    "B": "ambiguity_offsets_mm = [6.0, 9.0, 22.0, 25.0]\n",
    # B with a wider MRI crop: do the leads depend on the crop around the initial pose?
    "C": "ambiguity_offsets_mm = [6.0, 9.0, 22.0, 25.0]\nroi_margin_mm = 45.0\n",
}


def _write_matrix(path: Path, m: np.ndarray) -> Path:
    path.write_text("\n".join(" ".join(f"{v:.12g}" for v in row) for row in m) + "\n")
    return path


def starts(case: Path, work: Path, signs: list[int], ordinary: bool) -> list[tuple[str, Path]]:
    t = load_truth(case)
    vb = np.asarray(t.landmarks["vertebral_body_posterior"])
    init = np.loadtxt(case / "init_ReferenceToMri.txt")
    out = [("ordinary", case / "init_ReferenceToMri.txt")] if ordinary else []
    for sign in signs:
        step = sign * (vb[1] - vb[0])
        m = np.eye(4)
        m[:3, 3] = -step
        tag = "level+" if sign > 0 else "level-"
        out.append((tag, _write_matrix(work / f"init-{case.name}-{tag}.txt", m @ init)))
    return out


def run_one(case: Path, start: str, init: Path, config: str, work: Path) -> dict:
    name = f"{case.name}-{start}-{config}"
    out = work / "results" / f"{name}.json"
    cmd = [
        "usnav",
        "register",
        str(case / "sweep.igs.mha"),
        "--mri",
        str(case / "mri.nii.gz"),
        "--calibration",
        str(case / "calibration.toml"),
        "--init",
        str(init),
        "--label",
        str(case / "tumor_label.nii.gz"),
        "--removed",
        str(case / "removed_label.nii.gz"),
        "--out",
        str(out),
        "--quiet",
        "--force",
    ]
    if CONFIGS[config]:
        cfg = work / f"config-{config}.toml"
        cfg.write_text(CONFIGS[config])
        cmd += ["--config", str(cfg)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    row: dict = {
        "name": name,
        "case": case.name,
        "start": start,
        "config": config,
        "status": p.returncode,
    }
    if p.returncode != 0 or not out.is_file():
        row["stderr"] = p.stderr.strip()[-400:]
        return row
    r = json.loads(out.read_text())
    truth = load_truth(case)
    d = r.get("diagnostics") or {}
    ts = r.get("tumor_stage") or {}
    row.update(
        accepted=r["accepted"],
        uncertainty_mm=r["uncertainty_mm"],
        correction_mm=r["correction_mm"],
        similarity=r["similarity"],
        reason=r["reason"],
        error_now_mm=truth.mtre_now(np.asarray(r["ReferenceToMri"])),
        candidate_error_now_mm=truth.mtre_now(np.asarray(r["CandidateReferenceToMri"])),
        initial_error_now_mm=truth.mtre_now(np.asarray(r["InitialReferenceToMri"])),
        tumor_applied=ts.get("applied"),
        tumor_gain=ts.get("similarity_gain"),
        tumor_translation_mm=ts.get("translation_mm"),
        margins={k: v for k, v in d.items() if k.startswith("ambiguity_margin")},
        diagnostics=d,
    )
    return row


def main(argv: list[str]) -> int:
    if argv[0] == "run":
        out = Path(argv[1])
        configs = argv[2].split(",")
        work = out.parent
        (work / "results").mkdir(parents=True, exist_ok=True)
        jobs = []
        for spec in argv[3:]:
            path, _, only = spec.partition(":")
            case = Path(path)
            signs = [1, -1] if not only else [1 if only == "+" else -1]
            for start, init in starts(case, work, signs, ordinary=not only):
                for config in configs:
                    jobs.append((case, start, init, config))
        with ThreadPoolExecutor(max_workers=2) as pool:
            for row in pool.map(lambda j: run_one(*j, work), jobs):
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(
                    row["name"],
                    row.get("accepted"),
                    f"{row.get('error_now_mm', float('nan')):.2f}",
                    (row.get("reason") or row.get("stderr", ""))[:110],
                    flush=True,
                )
        return 0
    if argv[0] == "table":
        rows = [json.loads(ln) for ln in Path(argv[1]).read_text().splitlines() if ln.strip()]
        print(
            "| case | start | cfg | init mm | accepted | published mm | candidate mm | "
            "bound | correction | tumor stage (gain) | margins 22/25 (elev) | reason |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["status"] != 0:
                print(f"| {r['case']} | {r['start']} | {r['config']} | exit {r['status']} |")
                continue
            m = r["margins"]
            lv = " / ".join(
                f"{m[k]:+.4f}" if k in m else "–"
                for k in ("ambiguity_margin_22mm", "ambiguity_margin_25mm")
            )
            u = r["uncertainty_mm"]
            tg = r["tumor_gain"]
            print(
                f"| {r['case']} | {r['start']} | {r['config']} | {r['initial_error_now_mm']:.1f} | "
                f"{'yes' if r['accepted'] else 'no'} | {r['error_now_mm']:.2f} | "
                f"{r['candidate_error_now_mm']:.2f} | {'–' if u is None else f'{u:.2f}'} | "
                f"{r['correction_mm']:.1f} | "
                f"{'–' if r['tumor_applied'] is None else r['tumor_applied']}"
                f"{'' if tg is None else f' ({tg:+.4f})'} | {lv} | {r['reason'][:70]} |"
            )
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
