"""Many simulated cases at once: ``usnav simulate --seeds 1-40 --out DIR [--families ...]``.

One case folder per seed, named ``<family>-<seed>``; the families are assigned round-robin over
the seeds in the order given (default: every family, baseline first), and ``DIR/manifest.csv``
(:mod:`usnav.io.manifest`) lists them with the tags ``family``, ``seed`` and ``site=usnav-sim``.

Resuming: ``DIR/dataset.json`` records the options the dataset is made with. Running again
into the same DIR with the same options simulates only the cases whose folder is not complete
(a case is simulated into a hidden temporary folder and renamed into place when done) and
rewrites the manifest for the seeds asked for. A non-empty DIR that is not such a dataset, or
one made with other options, is refused unless ``force`` (which also simulates every case again).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from usnav.errors import InputError
from usnav.io.manifest import ManifestCase, write_manifest
from usnav.lifeline import follow_parent, parent_mark
from usnav.sim.case import FILE_NAMES, SIM_VERSION, check_output_folder, simulate_case
from usnav.sim.families import check_family, family_names
from usnav.sim.options import SimOptions

#: The dataset's record of how it was made (for resuming).
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
SITE = "usnav-sim"
#: Most seeds one command simulates.
MAX_CASES = 100_000
_TMP_PREFIX = ".partial-"


def parse_seeds(spec: str) -> list[int]:
    """``"1-4"``, ``"1,3,7"``, ``"1-3,10"`` → the seeds in that order.

    Raises
    ------
    InputError
        Anything else (negative numbers, a range that runs backwards, a repeated seed, more
        than :data:`MAX_CASES` seeds).
    """
    text = (spec or "").strip()
    if not text:
        raise InputError("--seeds", "empty", "give seeds like 1-4, 1,3,7 or 1-3,10")
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise InputError(
                "--seeds", f"{part!r} is not a seed or a range", "give seeds like 1-4 or 1,3,7"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError("--seeds", f"range {part!r} runs backwards", f"write {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_CASES:
            raise InputError("--seeds", f"more than {MAX_CASES} seeds", f"give at most {MAX_CASES}")
        seeds.extend(range(lo, hi + 1))
    seen: set[int] = set()
    for s in seeds:
        if s in seen:
            raise InputError("--seeds", f"seed {s} is given twice", "list every seed once")
        seen.add(s)
    return seeds


def parse_families(spec: str | None) -> list[str]:
    """``"a,b"`` → the family names (checked); ``None`` → every family, baseline first."""
    if spec is None:
        return family_names()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--families", "empty", "give family names separated by commas")
    for n in names:
        check_family(n)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError("--families", f"{', '.join(twice)} listed twice", "list every family once")
    return names


def dataset_plan(seeds: Sequence[int], families: Sequence[str]) -> list[tuple[str, int]]:
    """(family, seed) of each case of a dataset: the families assigned round-robin over the
    seeds in the order given (``usnav simulate --seeds 1-4 --families a,b`` → a1 b2 a3 b4)."""
    return [(families[i % len(families)], seed) for i, seed in enumerate(seeds)]


def case_name(family: str, seed: int) -> str:
    """Folder and manifest name of a case."""
    return f"{family}-{seed}"


@dataclass
class DatasetResult:
    """What :func:`simulate_dataset` did.

    Attributes
    ----------
    manifest
        Path of ``manifest.csv``.
    cases
        The cases of the manifest, in seed order.
    simulated, skipped
        Names of the cases simulated now and of those already complete.
    """

    manifest: Path
    cases: list[ManifestCase]
    simulated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _record(options: SimOptions) -> dict:
    opts = json.loads(options.model_dump_json())
    for key in ("family", "workers", "preview", "preview_frames"):
        opts.pop(key, None)
    return {"generator": "usnav simulate --seeds", "simulator_version": SIM_VERSION, **opts}


def _check_dataset_folder(out: Path, options: SimOptions, force: bool) -> None:
    record = _record(options)
    marker = out / DATASET_FILE
    if out.is_dir() and any(out.iterdir()) and not force:
        if not marker.is_file():
            raise InputError(
                out,
                "folder is not empty and is not a usnav simulate dataset",
                "give a new or empty folder (a dataset folder is resumed)",
            )
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(marker, f"unreadable ({exc})", "remove the folder") from None
        if old != record:
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise InputError(
                out,
                "dataset was made with other options (" + ", ".join(changed) + ")",
                "resume it with the same options, or give a new folder",
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(out, f"cannot write the dataset folder: {exc.strerror}") from exc


def _complete(folder: Path) -> bool:
    return all((folder / FILE_NAMES[k]).is_file() for k in ("truth", "sweep", "mri"))


def _simulate_one(seed: int, folder: str, options_json: str) -> str:
    """Simulate one case into a temporary folder and rename it into place (worker process)."""
    options = SimOptions.model_validate_json(options_json)
    final = Path(folder)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    simulate_case(seed, tmp, options)
    if final.exists():  # an incomplete earlier attempt
        shutil.rmtree(final)
    tmp.rename(final)
    return final.name


def _sweep_pattern(truth: Path) -> str:
    """The case's sweep pattern (``transverse``, ``sagittal``, ``fan``, ``partial``) from its
    truth file's appearance."""
    try:
        appearance = json.loads(truth.read_text(encoding="utf-8")).get("appearance", {})
    except (OSError, ValueError) as exc:
        raise InputError(truth, f"unreadable ({exc})", "simulate the case again") from None
    return str(appearance.get("sweep_pattern", "transverse"))


def manifest_case(folder: Path, family: str, seed: int) -> ManifestCase:
    """The manifest row of a case folder written by :func:`usnav.sim.simulate_case`.

    Its tags: ``family``, ``seed``, ``site`` and ``sweep_pattern`` (``usnav evaluate
    --group-by sweep_pattern``: session 31 found every tie of 48 ``sweep-anatomy`` cases on fan
    and partial sweeps, which a per-family table hides)."""
    truth = folder / FILE_NAMES["truth"]
    return ManifestCase(
        case=folder.name,
        recording=folder / FILE_NAMES["sweep"],
        mri=folder / FILE_NAMES["mri"],
        label=folder / FILE_NAMES["tumor_label"],
        calibration=folder / FILE_NAMES["calibration"],
        init=folder / FILE_NAMES["init_reference_to_mri"],
        truth=truth,
        tags={
            "family": family,
            "seed": str(seed),
            "site": SITE,
            "sweep_pattern": _sweep_pattern(truth),
        },
    )


def simulate_dataset(
    seeds: list[int],
    out_dir: str | Path,
    options: SimOptions | None = None,
    families: list[str] | None = None,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    force: bool = False,
) -> DatasetResult:
    """Simulate one case per seed into ``out_dir`` and write ``out_dir/manifest.csv``.

    Parameters
    ----------
    seeds
        Non-negative, distinct seeds (:func:`parse_seeds`).
    out_dir
        The dataset folder: new, empty, or a dataset made with the same options (resumed).
    options
        Case options (defaults if None); their ``family`` is replaced per case.
    families
        Families assigned round-robin over the seeds in order (None: all, baseline first).
    workers
        Processes simulating cases at once (each simulates its frames on one thread).
    progress
        Called with (case name, cases done, cases to do) after each case.
    force
        Simulate every case again (replacing its folder) and accept a non-empty folder or other
        options; other files in the folder are left alone.

    Returns
    -------
    DatasetResult

    Raises
    ------
    InputError
        Bad seeds or families, or an output folder that is a file, not empty and not a
        dataset, or a dataset made with other options — before any case is simulated.
    """
    options = options or SimOptions()
    fams = parse_families(None) if families is None else [check_family(f).name for f in families]
    if not seeds:
        raise InputError("--seeds", "no seeds given")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise InputError("--seeds", "seeds must be distinct non-negative integers")
    out = check_output_folder(out_dir)
    _check_dataset_folder(out, options, force)
    plan = [(seed, fam) for fam, seed in dataset_plan(seeds, fams)]
    todo = [(seed, fam) for seed, fam in plan if force or not _complete(out / case_name(fam, seed))]
    result = DatasetResult(manifest=out / MANIFEST_FILE, cases=[])
    result.skipped = [case_name(f, s) for s, f in plan if (s, f) not in todo]
    threads = 1 if workers > 1 else options.workers  # processes, or frame threads
    jobs = [
        (
            seed,
            str(out / case_name(fam, seed)),
            options.model_copy(update={"family": fam, "workers": threads}).model_dump_json(),
        )
        for seed, fam in todo
    ]
    done = 0
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            result.simulated.append(_simulate_one(*job))
            done += 1
            if progress:
                progress(result.simulated[-1], done, len(jobs))
    else:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=get_context("spawn"),
            # a worker ends with this process, even one killed by SIGKILL: an orphaned worker
            # waited for its next job forever (usnav/lifeline.py)
            initializer=follow_parent,
            initargs=(parent_mark(watch_only=True),),
        ) as pool:
            futures = [pool.submit(_simulate_one, *job) for job in jobs]
            for fut in as_completed(futures):
                result.simulated.append(fut.result())
                done += 1
                if progress:
                    progress(result.simulated[-1], done, len(jobs))
    result.cases = [manifest_case(out / case_name(f, s), f, s) for s, f in plan]
    write_manifest(result.manifest, result.cases)
    return result
