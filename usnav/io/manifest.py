"""Dataset manifests: one evaluation case per row of a CSV file.

A manifest lists the files of each case, so that batch tools (``usnav evaluate``) can find them
without knowing who made the case (``usnav simulate --seeds``, a RESECT sweep, a recorded
operation). Format (UTF-8 CSV with a header row, documented in ``docs/evaluation.md``):

======================  ==========================================================================
column                  meaning
======================  ==========================================================================
``case``                unique name of the case (required, no ``/``)
``recording``           PLUS sequence file of the tracked sweep (required)
``mri``                 preoperative MRI (NIfTI/NRRD, RAS on load) (required)
``label``               tumor label map on the MRI grid (optional: needed for margins)
``calibration``         ImageToProbe: usnav calibration TOML, PLUS XML or 16 numbers (required)
``init``                initial ``ReferenceToMri``: 16 numbers or a usnav RESULT.json (required)
``truth``               ground truth: a simulator ``truth.json``, an MNI ``.tag``, or the true
                        ``ReferenceToMri`` as 16 numbers (scored at ``label``'s tumor) (optional)
``family``              appearance family (simulated cases) or ``real`` (a tag)
``seed``                simulator seed (a tag; empty for real cases)
``site``                where the case comes from, e.g. ``usnav-sim``, ``resect`` (a tag)
any other column        a free tag, kept as text
======================  ==========================================================================

Paths are relative to the manifest's folder (or absolute). The reader checks the header and every
row and names the row and column of the first problem; it does not check that files exist (a
missing file fails only its own case in a batch run).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from usnav.errors import InputError

#: Columns holding file paths, in the order they are written.
PATH_COLUMNS = ("recording", "mri", "label", "calibration", "init", "truth", "removed")
#: Path columns every row must fill.
REQUIRED_PATHS = ("recording", "mri", "calibration", "init")
#: Tag columns written after the paths (any other column is a free tag too).
TAG_COLUMNS = ("family", "seed", "site")


@dataclass(frozen=True)
class ManifestCase:
    """One case of a dataset.

    Attributes
    ----------
    case
        Unique name of the case.
    recording, mri, calibration, init
        Absolute paths of the required files.
    label, truth, removed
        Absolute paths of the optional files, or ``None`` (``removed``: the label map of the
        tissue the surgery removed, ``usnav register --removed``).
    tags
        Tag columns (``family``, ``seed``, ``site`` and any free ones) as text; empty ones are
        left out.
    """

    case: str
    recording: Path
    mri: Path
    calibration: Path
    init: Path
    label: Path | None = None
    truth: Path | None = None
    removed: Path | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The ``family`` tag, or ``""``."""
        return self.tags.get("family", "")


def read_manifest(path: str | Path) -> list[ManifestCase]:
    """Read a manifest CSV.

    Parameters
    ----------
    path
        The manifest file; relative paths inside it are relative to its folder.

    Returns
    -------
    list of ManifestCase
        The cases in file order.

    Raises
    ------
    InputError
        The file is missing or unreadable, a column is repeated, a required column or value
        is missing, or a case name is repeated or contains ``/``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(path, "no such manifest", "give the manifest.csv of a dataset") from None
    except IsADirectoryError:
        inside = path / "manifest.csv"
        hint = f"give {inside}" if inside.is_file() else "give the manifest.csv of a dataset"
        raise InputError(path, "is a folder, not a manifest", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest ({exc})") from None
    # rows with their line numbers: blank lines are skipped by the reader, so counting rows
    # would name the wrong line; a quoted field keeps its line breaks (and is refused below)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = [(row, reader.line_num) for row in reader]
    except csv.Error as exc:
        raise InputError(f"{path}, line {reader.line_num}", f"not a CSV table ({exc})") from None
    columns = _header(text)
    repeated = sorted({c for c in columns if c.strip() and columns.count(c) > 1})
    if repeated:
        raise InputError(
            path,
            f"column {repeated[0]!r} appears {columns.count(repeated[0])} times in the header",
            "give every column once (only one of them would be read)",
        )
    header = set(columns)
    missing = [c for c in ("case", *REQUIRED_PATHS) if c not in header]
    if missing:
        separator = next(
            (
                name
                for sep, name in ((";", "semicolons"), ("\t", "tabs"))
                if len(columns) == 1 and sep in columns[0]
            ),
            None,
        )
        if separator:  # a spreadsheet's export in a locale whose list separator is not ","
            raise InputError(
                path,
                f"its header is one column, separated by {separator}: a manifest is "
                "comma-separated",
                "save it as CSV with commas (UTF-8), e.g. 'CSV UTF-8 (comma delimited)'",
            )
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)}",
            "a manifest needs case, recording, mri, calibration and init (see docs/evaluation.md)",
        )
    base = path.parent
    cases: list[ManifestCase] = []
    seen: set[str] = set()
    for row, number in rows:
        if None in row:
            raise InputError(f"{path}, line {number}", "more values than columns")
        name = (row.get("case") or "").strip()
        where = f"{path}, line {number}"
        if not name:
            raise InputError(where, "empty 'case'", "give every case a unique name")
        if "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
            raise InputError(
                where,
                f"case name {name!r} is not a plain name",
                "use no slashes and no line breaks or control characters",
            )
        if name in seen:
            raise InputError(where, f"case {name!r} appears twice", "case names must be unique")
        seen.add(name)
        paths: dict[str, Path | None] = {}
        for column in PATH_COLUMNS:
            value = (row.get(column) or "").strip()
            if not value:
                if column in REQUIRED_PATHS:
                    raise InputError(
                        where, f"empty '{column}'", f"give case {name!r} its {column} file"
                    )
                paths[column] = None
                continue
            p = Path(value)
            paths[column] = p if p.is_absolute() else (base / p)
        tags = {
            k: (v or "").strip()
            for k, v in row.items()
            if k not in PATH_COLUMNS and k != "case" and (v or "").strip()
        }
        cases.append(ManifestCase(case=name, tags=tags, **paths))  # type: ignore[arg-type]
    return cases


def _header(text: str) -> list[str]:
    first = text.splitlines()[0] if text.strip() else ""
    return next(csv.reader([first])) if first else []


def write_manifest(path: str | Path, cases: Iterable[ManifestCase]) -> Path:
    """Write a manifest CSV; paths under its folder are written relative to it.

    Parameters
    ----------
    path
        The manifest file to write (its folder must exist). An existing file is replaced.
    cases
        The cases; tag columns are the union of all cases' tags (``family``, ``seed``, ``site``
        first).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    cases = list(cases)
    extra = sorted({k for c in cases for k in c.tags} - set(TAG_COLUMNS))
    columns = ["case", *PATH_COLUMNS, *TAG_COLUMNS, *extra]
    base = path.parent.resolve()

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        p = Path(p).resolve()
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for c in cases:
            row = {"case": c.case, **{k: rel(getattr(c, k)) for k in PATH_COLUMNS}}
            row.update({k: c.tags.get(k, "") for k in (*TAG_COLUMNS, *extra)})
            writer.writerow(row)
    return path
