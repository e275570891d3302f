"""Read PLUS device-set XML: ``<CoordinateDefinitions>`` transforms.

So a calibration made with PLUS fCal (``<Transform From="Image" To="Probe" Matrix="..."/>``) is
usable as it is.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from usnav.errors import ConfigError

#: The attribute and child element in which ``usnav calibrate --xml`` records a flagged
#: calibration (``Flagged="TRUE"``, one ``<Warning>`` per warning). PLUS reads only a
#: Transform's From, To, Matrix, Persistent, Status, Error and Date and none of its children
#: (IGSIO ``vtkIGSIOTransformRepository::ReadConfiguration``), so a device set with them
#: still loads in PLUS.
FLAGGED_ATTRIBUTE = "Flagged"
WARNING_ELEMENT = "Warning"
#: The attributes in which ``usnav calibrate spatial --xml`` records what the TOML's
#: ``[spatial]`` records beside the matrix and PLUS has no place for: the image size
#: (``"cols rows"``, px) its mm per pixel hold for, and the tracker lag (s) its images were
#: paired with their poses at. PLUS ignores them; usnav's loaders check them as the TOML's.
IMAGE_SIZE_ATTRIBUTE = "UsnavImageSizePx"
TRACKER_LAG_ATTRIBUTE = "UsnavTrackerLagSec"


@dataclass
class PlusTransform:
    """One ``<Transform>`` of ``<CoordinateDefinitions>``: matrix row-major, mm.

    ``warnings``: the ``<Warning>`` children (usnav's record of a flagged calibration)."""

    source: str
    target: str
    matrix: np.ndarray
    attributes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.source}To{self.target}"

    @property
    def flagged(self) -> bool | None:
        """``Flagged`` as PLUS writes booleans (TRUE/FALSE); None when absent."""
        value = self.attributes.get(FLAGGED_ATTRIBUTE)
        return None if value is None else value.strip().upper() == "TRUE"

    @property
    def image_size_px(self) -> list[int] | None:
        """``UsnavImageSizePx`` as ``[cols, rows]``; None when absent (checked on reading)."""
        value = self.attributes.get(IMAGE_SIZE_ATTRIBUTE)
        return None if value is None else [int(v) for v in value.split()]

    @property
    def tracker_lag_s(self) -> float | None:
        """``UsnavTrackerLagSec``, s; None when absent (checked on reading)."""
        value = self.attributes.get(TRACKER_LAG_ATTRIBUTE)
        return None if value is None else float(value)


#: what to do about a matrix text that does not hold 16 numbers
#: the hint of a matrix file that is not 16 numbers
GIVE_16 = "write 16 numbers, row-major"


def _structured_kind(text: str) -> str:
    """What a structured text file given for 16 numbers is ("" when it does not look like one):
    a JSON object (a usnav RESULT.json, a simulator truth.json) or a TOML file (a calibration,
    a device or options file). Their words counted as numbers said only "found 233"."""
    head = text.lstrip()
    if head.startswith("{"):
        return "a JSON document (a RESULT.json or a truth.json?)"
    if re.search(r"^\s*\[[A-Za-z_][\w.-]*\]\s*(#.*)?$", text, re.MULTILINE) or re.search(
        r"^\s*[A-Za-z_][\w-]*\s*=", text, re.MULTILINE
    ):
        return "a TOML file (a calibration, device or options file?)"
    return ""


def parse_matrix_text(text: str, where: str) -> np.ndarray:
    """16 numbers separated by whitespace, commas or semicolons, row-major → 4×4; square
    brackets are separators too (``[[a, b, c, d], ...]`` as JSON, Python or numpy print it,
    ``[a b c d; ...]`` as MATLAB does: all row-major). ``#`` starts a comment to the end of its
    line (so a calibration file can say what it holds, as an init file can).

    Raises
    ------
    ConfigError
        Not 16 numbers (12 said as such: the top three rows, ITK's parameters and
        OpenIGTLink's order are three layouts of them, so they are not guessed), or an ITK
        transform file (``.tfm``: LPS and the inverse direction).
    """
    if "Insight Transform File" in text:
        raise ConfigError(
            where,
            "is an ITK transform file (.tfm), which is not read: ITK writes it in LPS and in "
            "the resampling (inverse) direction",
            "give the 4×4 matrix 3D Slicer shows for the transform (RAS) as 16 numbers, row-major",
        )
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    tokens = " ".join(lines).translate(str.maketrans(",;[]", "    ")).split()
    if len(tokens) == 12:
        raise ConfigError(
            where,
            "found 12 numbers, not the 16 of a 4×4 matrix (12 are not guessed: the top three "
            "rows, ITK's rotation-then-translation and OpenIGTLink's column order differ)",
            "if they are the top three rows, row-major, add the row 0 0 0 1",
        )
    if len(tokens) != 16:
        kind = _structured_kind(text)
        if kind:
            raise ConfigError(where, f"is {kind}, not a text file of 16 numbers", GIVE_16)
        raise ConfigError(
            where, f"expected 16 numbers for a 4×4 matrix, found {len(tokens)}", GIVE_16
        )
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as exc:
        raise ConfigError(where, f"matrix has a non-number: {exc}", GIVE_16) from exc
    if not np.all(np.isfinite(values)):
        raise ConfigError(where, "matrix has NaN or infinite values", GIVE_16)
    return values.reshape(4, 4)


def read_xml_root(path: str | Path) -> ET.Element:
    """Parse an XML file, with errors naming the file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(p, "no such file")
    if p.is_dir():
        raise ConfigError(p, "is a folder", "give the XML file")
    try:
        return ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise ConfigError(p, f"not valid XML: {exc}") from exc
    except OSError as exc:  # permissions, an I/O error
        raise ConfigError.unreadable(p, exc) from None


def read_coordinate_definitions(path: str | Path) -> dict[str, PlusTransform]:
    """All ``<CoordinateDefinitions>/<Transform>`` of a PLUS device-set XML, by name.

    Raises
    ------
    ConfigError
        If the file is not XML, has no ``CoordinateDefinitions``, or a matrix is malformed.
    """
    root = read_xml_root(path)
    defs = root if root.tag == "CoordinateDefinitions" else root.find(".//CoordinateDefinitions")
    if defs is None:
        raise ConfigError(
            path,
            "no <CoordinateDefinitions> element",
            "is this a PLUS device-set configuration file?",
        )
    out: dict[str, PlusTransform] = {}
    for i, el in enumerate(defs.findall("Transform")):
        src, dst, mtx = el.get("From"), el.get("To"), el.get("Matrix")
        where = f"{path}: CoordinateDefinitions/Transform[{i + 1}]"
        if not src or not dst or mtx is None:
            raise ConfigError(where, "needs From, To and Matrix attributes")
        flag = el.get(FLAGGED_ATTRIBUTE)
        if flag is not None and flag.strip().upper() not in ("TRUE", "FALSE"):
            # read as not flagged, a damaged or hand-edited flag would clear it silently
            raise ConfigError(
                f"{where}: {FLAGGED_ATTRIBUTE}",
                f"is {flag!r}, expected TRUE or FALSE",
                'usnav calibrate writes Flagged="TRUE" on a calibration its warnings flagged; '
                'set "FALSE" to use it as good knowingly',
            )
        _check_usnav_attributes(el, where)
        warnings = [" ".join((w.text or "").split()) for w in el.findall(WARNING_ELEMENT)]
        t = PlusTransform(src, dst, parse_matrix_text(mtx, where), dict(el.attrib), warnings)
        out[t.name] = t
    return out


def _check_usnav_attributes(el: ET.Element, where: str) -> None:
    """Refuse a malformed ``UsnavImageSizePx`` / ``UsnavTrackerLagSec``: read as absent, a
    damaged one would switch off the check it is there for."""
    size = el.get(IMAGE_SIZE_ATTRIBUTE)
    if size is not None:
        parts = size.split()
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ConfigError(
                f"{where}: {IMAGE_SIZE_ATTRIBUTE}",
                f"is {size!r}, expected two whole numbers: columns rows",
                "usnav calibrate spatial --xml writes the calibration images' size, e.g. "
                '"820 616"',
            )
    lag = el.get(TRACKER_LAG_ATTRIBUTE)
    if lag is not None:
        try:
            ok = math.isfinite(float(lag))
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{where}: {TRACKER_LAG_ATTRIBUTE}",
                f"is {lag!r}, expected a number of seconds",
                "usnav calibrate spatial --xml writes the lag its images were paired at, "
                'e.g. "0.0"',
            )


def coordinate_definitions_xml(transforms: list[PlusTransform]) -> str:
    """The ``<CoordinateDefinitions>`` element PLUS reads, as text."""
    lines = ["<CoordinateDefinitions>"]
    for t in transforms:
        # the shortest text that reads back as the same float: the file is lossless (9
        # significant digits left the matrix up to 5e-8 from the TOML's)
        rows = "\n".join("        " + " ".join(repr(float(v)) for v in row) for row in t.matrix)
        extra = "".join(
            f" {k}={quoteattr(v)}"
            for k, v in t.attributes.items()
            if k not in ("From", "To", "Matrix")
        )
        start = f'  <Transform From="{t.source}" To="{t.target}"\n      Matrix="\n{rows}"{extra}'
        if not t.warnings:
            lines.append(f"{start} />")
            continue
        lines.append(f"{start}>")
        lines += [f"    <{WARNING_ELEMENT}>{escape(w)}</{WARNING_ELEMENT}>" for w in t.warnings]
        lines.append("  </Transform>")
    lines.append("</CoordinateDefinitions>")
    return "\n".join(lines) + "\n"
