"""Volumes (preoperative MRI, tumor label maps) in RAS world space, mm.

One type, :class:`Volume`: a voxel array indexed ``[i, j, k]`` and the 4×4 affine from voxel
index to RAS mm (nibabel's convention). NIfTI is RAS already; NRRD files in LPS (ITK, Slicer's
default) are converted here, once, on load and save. Lengths in metres or micrometres are
converted to mm here too. A MetaIO file (``.mha``/``.mhd``) holding one 3D image (what ITK,
3D Slicer and ``usnav reconstruct`` write) is read too, in ITK's LPS as ITK reads it.

The surgeon checks the plan in 3D Slicer, which reads both formats through ITK, so where a file
leaves its placement open usnav reads it as ITK does, or refuses it where the readers disagree:

- NRRD without anatomical labels on its space (no ``space`` field, only ``space dimension: 3``;
  or ``space: 3D-right-handed`` / ``scanner-xyz``) is read as **LPS**. ITK's NrrdImageIO flips
  only RAS and LAS space directions and origin to its LPS world and keeps every other space's
  numbers as they are, so Slicer shows such a file as LPS; reading it as RAS would put it
  mirrored in x and y against what the surgeon saw. A NRRD with only per-axis ``spacings`` (no
  ``space directions``) has no world orientation and is refused.
- NIfTI whose sform and qform are both set (codes > 0) but place a corner of the volume more than
  :data:`FORMS_AGREE_MM` apart, or mirror each other, is refused: nibabel (and usnav) use the
  sform, ITK 5.4 uses the qform unless the sform code is 1 (scanner) or the two nearly agree,
  ITK 4 always used a qform that was set: which placement the surgeon saw depends on the program.
  Differences up to that (quaternion rounding) load, with the sform.
- Units: NIfTI ``xyzt_units`` metres (×1000) and micrometres (×0.001) are converted to mm, mm and
  unknown (0) are taken as mm, as ITK does (spacing and origin). A NRRD whose ``space units`` are
  not mm is refused: ITK ignores the field (3D Slicer shows the numbers as mm), so honouring it
  would put usnav and the plan the surgeon checked in Slicer at different sizes, and ignoring it
  would misread a file that means it; the user rewrites it in mm.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usnav.errors import InputError
from usnav.io.inputs import refuse_empty, require_existing

if TYPE_CHECKING:
    from usnav.io.sequence_reader import Sequence

log = logging.getLogger("usnav.io.volume")

#: diag(-1, -1, 1, 1): flips between LPS and RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: NRRD spaces with anatomical labels → the matrix that takes their coordinates to RAS.
_NRRD_SPACES = {
    "right-anterior-superior": np.eye(4),
    "ras": np.eye(4),
    "left-posterior-superior": LPS_TO_RAS,
    "lps": LPS_TO_RAS,
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0, 1.0]),
}
#: NRRD spaces without anatomical labels: ITK keeps their numbers as its own LPS coordinates.
_NRRD_UNLABELLED_SPACES = ("3d-right-handed", "scanner-xyz")

#: NRRD ``space units`` → mm per unit (lower case; both micro signs).
_NRRD_MM_PER_UNIT = {
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1000.0),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 10.0),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres", ""), 1.0),
    **dict.fromkeys(("um", "\u00b5m", "\u03bcm", "micron", "microns"), 0.001),
    **dict.fromkeys(("micrometer", "micrometers", "micrometre", "micrometres"), 0.001),
}

#: NIfTI ``xyzt_units`` spatial code (bits 0-2) → (name, mm per unit). 0 = unknown, taken as mm
#: (as ITK's NiftiImageIO does; it scales spacing and origin by the same factors).
_NIFTI_MM_PER_UNIT = {0: ("unknown", 1.0), 1: ("m", 1000.0), 2: ("mm", 1.0), 3: ("µm", 0.001)}

#: The sform and qform of a NIfTI may place the volume's corners this far apart (mm) and still
#: count as one placement (quaternion rounding, float32 storage); farther apart is refused.
FORMS_AGREE_MM = 0.5

#: :func:`save_volume` writes the qform only if it places the corners of the volume within this
#: (mm) of the affine: float32 rounding, not a shear. ITK (3D Slicer) reads a sheared sform's
#: qform instead of the sform, so a qform that only approximates the affine would put Slicer's
#: volume up to :data:`FORMS_AGREE_MM` away from usnav's.
QFORM_EXACT_MM = 1e-3


@dataclass
class Volume:
    """A 3D image in RAS world space.

    Attributes
    ----------
    data
        Voxels, shape (I, J, K), indexed ``data[i, j, k]``.
    affine
        4×4 voxel index (i, j, k, 1) → RAS mm (of the voxel centre).
    source
        Where it came from (for messages).
    meta
        Extra header fields kept from the file (strings).
    read_as
        How the file's placement and length unit were read, for a person (``usnav info``), e.g.
        ``"no 'space' field: taken as LPS, as ITK and 3D Slicer read it; lengths in mm"``.
    """

    data: np.ndarray
    affine: np.ndarray
    source: str = "<memory>"
    meta: dict[str, str] = field(default_factory=dict)
    read_as: str = ""

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        check_affine(self.affine, self.source)
        if self.data.ndim != 3:
            raise InputError(self.source, f"expected a 3D volume, got {self.data.ndim} dimensions")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k, mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def world_to_voxel(self) -> np.ndarray:
        """4×4 RAS mm → continuous voxel index."""
        return np.linalg.inv(self.affine)

    def bounds_ras(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned RAS bounding box (min, max) of the voxel centres, mm."""
        world = _grid_corners(self.shape, 0.0) @ self.affine.T
        return world[:, :3].min(axis=0), world[:, :3].max(axis=0)

    def digest(self) -> str:
        """A short fingerprint of the voxels and their placement (16 hex digits of a SHA-256
        over the shape, the voxel type, the affine and the voxels).

        The same file loaded twice gives the same digest; another volume (another patient,
        another series, the same one resampled) a different one. ``usnav run`` publishes its
        MRI's and label's digests in its status, so a display that loaded its own copy can
        tell that it is not the run's (docs/display.md).
        """
        import hashlib

        h = hashlib.sha256()
        h.update(repr((self.shape, self.data.dtype.str)).encode())
        h.update(np.ascontiguousarray(self.affine, dtype="<f8").tobytes())
        h.update(memoryview(np.ascontiguousarray(self.data)).cast("B"))
        return h.hexdigest()[:16]

    def check_finite(self) -> None:
        """Raise :class:`InputError` if the voxels hold NaN or infinite values."""
        if np.issubdtype(self.data.dtype, np.floating) and not np.all(np.isfinite(self.data)):
            bad = int(np.count_nonzero(~np.isfinite(self.data)))
            raise InputError(
                self.source,
                f"{bad} voxels are NaN or infinite",
                "fix or mask them before using this volume",
            )

    def check_not_label_map(self, hint: str) -> None:
        """Raise :class:`InputError` if this volume, read as an MRI, is a label map: it holds
        2 to :data:`MAX_LABEL_VALUES` distinct whole numbers, all within 0 to
        :data:`MAX_LABEL_VALUES` (a tumor label, a segmentation). A phantom's or a simulator's
        piecewise-constant MRI (0, 100, 200) is an MRI with few grey levels, not a label map.

        Registered as an MRI, such a volume gave a candidate the tests rejected, exit 0: the
        mistake was never said. Any MRI has hundreds of grey levels (a uint8 one too). A
        constant volume (one value) is left to the registration's own refusal. Cheap for an
        MRI: a sample of ~100 000 voxels has more values than a label map can.

        Parameters
        ----------
        hint
            What to do instead (names the caller's option for the MRI and the label).
        """
        data = np.asarray(self.data)
        sample = data.ravel(order="K")[:: max(1, data.size // 100_000)]  # (a view)
        if len(np.unique(sample)) > MAX_LABEL_VALUES:
            return
        values = np.unique(data)
        if not 2 <= len(values) <= MAX_LABEL_VALUES or np.any(values != np.round(values)):
            return
        if values[0] < 0 or values[-1] > MAX_LABEL_VALUES:  # grey levels, however few
            return
        shown = ", ".join(f"{float(v):g}" for v in values[:6]) + (", …" if len(values) > 6 else "")
        raise InputError(
            self.source,
            f"holds only {len(values)} distinct values ({shown}): a label map, not an MRI",
            hint,
        )


#: a volume given as the MRI with at most this many distinct whole-number values (and at
#: least two) is a label map (:meth:`Volume.check_not_label_map`)
MAX_LABEL_VALUES = 16

#: a label voxel may be at most this many times larger (or smaller) than the MRI's
MAX_SPACING_RATIO = 4.0


def check_label_fits_mri(label: Volume, mri: Volume) -> None:
    """Refuse a label map that does not belong to this MRI: its tumor lies (mostly) outside
    the MRI, or its grid is not comparable with the MRI's.

    A label map from another case, or one saved without its affine, still "loads"; the
    margins would then be drawn where there is no tumor. The checks, in world (RAS) mm:

    * grids: every label voxel edge within a factor :data:`MAX_SPACING_RATIO` of the MRI's
      (a label in voxel units or metres is refused);
    * extent: at least half of the labelled voxels lie inside the MRI's field of view (the
      box of its voxel centres, half a voxel added on each side).

    Raises
    ------
    InputError
        Naming the label file, both extents and what to do.
    """
    lab_sp = np.sort(np.asarray(label.spacing_mm, float))
    mri_sp = np.sort(np.asarray(mri.spacing_mm, float))
    ratio = lab_sp / mri_sp
    if np.any(ratio > MAX_SPACING_RATIO) or np.any(ratio < 1 / MAX_SPACING_RATIO):
        raise InputError(
            label.source,
            f"its voxels ({_mm(label.spacing_mm)} mm) do not compare with the MRI's "
            f"({_mm(mri.spacing_mm)} mm): not a segmentation of this MRI",
            "give the label map saved with the MRI's geometry (same space, mm)",
        )
    index = np.argwhere(np.asarray(label.data) != 0)
    if len(index) == 0:
        return  # check_label_map has refused it already when a tumor label is required
    step = max(1, len(index) // 200_000)
    world = np.c_[index[::step], np.ones(len(index[::step]))] @ label.affine[:3].T
    lo, hi = mri.bounds_ras()
    half = 0.5 * np.abs(mri.affine[:3, :3]).sum(axis=1)
    inside = np.all((world >= lo - half) & (world <= hi + half), axis=1)
    if inside.mean() < 0.5:
        t_lo, t_hi = world.min(axis=0), world.max(axis=0)
        where = "mostly outside" if inside.any() else "outside"
        raise InputError(
            label.source,
            f"its tumor ({_box(t_lo, t_hi)}) lies {where} the MRI "
            f"({_box(lo - half, hi + half)}), {100 * inside.mean():.0f}% inside",
            "give the label map of this case (segmented on this MRI)",
        )
    if not inside.all():
        log.warning(
            "%s: %.0f%% of the tumor lies outside the MRI", label.source, 100 * (1 - inside.mean())
        )


def _mm(values) -> str:
    return " × ".join(f"{v:.3g}" for v in values)


def _box(lo: np.ndarray, hi: np.ndarray) -> str:
    return ", ".join(
        f"{axis} {round(a)}..{round(b)}" for axis, a, b in zip("RAS", lo, hi, strict=True)
    )


def _grid_corners(shape: tuple[int, ...], margin: float) -> np.ndarray:
    """The 8 corners of a voxel grid as homogeneous voxel indices, shape (8, 4).

    ``margin`` 0 gives the corner voxels' centres, 0.5 the outer faces of the corner voxels.
    """
    i, j, k = (shape[0] - 1 + margin, shape[1] - 1 + margin, shape[2] - 1 + margin)
    return np.array(
        [[a, b, c, 1.0] for a in (-margin, i) for b in (-margin, j) for c in (-margin, k)]
    )


def check_affine(affine: np.ndarray, source: str = "<memory>") -> None:
    """Refuse an affine that cannot map voxels to the world (non-finite, singular, projective)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InputError(
            source,
            "voxel-to-world affine is missing or not finite",
            "the file needs a valid orientation (sform/qform or space directions)",
        )
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise InputError(source, "voxel-to-world affine is projective (last row not 0 0 0 1)")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise InputError(
            source,
            "voxel-to-world affine is singular (a zero spacing?)",
            "check the voxel spacing / space directions in the header",
        )


def load_volume(path: str | Path, *, allow_default_affine: bool = False) -> Volume:
    """Load a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.seg.nrrd``) or MetaIO
    (``.mha``, ``.mhd``: one 3D image, as ITK, 3D Slicer and ``usnav reconstruct`` write it)
    volume.

    Parameters
    ----------
    path
        The file.
    allow_default_affine
        Accept a NIfTI whose sform and qform codes are both 0 (no real orientation: nibabel
        then invents a scaling-only affine). Refused by default, because registering to a
        volume of unknown orientation gives a confident wrong answer.

    Returns
    -------
    Volume
        Affine from voxel index to RAS mm, whatever the file's space and length unit;
        :attr:`Volume.read_as` says how they were read (see the module docstring for the rules).

    Raises
    ------
    InputError
        Missing file, unreadable header, unsupported format, unusable affine; a NIfTI whose
        sform and qform disagree; a NRRD without space directions or with an unknown space or
        space unit; a MetaIO file that is not one 3D grey image (a recording of several
        frames, colour) or whose ``ElementSpacing``/``Offset``/``TransformMatrix`` is not numbers.
    """
    p = Path(path)
    require_existing(p)
    if p.is_dir():
        raise InputError(p, "is a folder, expected a volume file (.nii, .nii.gz, .nrrd, .mha)")
    refuse_empty(p)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(p, allow_default_affine)
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return _load_nrrd(p)
    if name.endswith((".mha", ".mhd")):
        from usnav.io.sequence_reader import read_sequence

        with read_sequence(p) as seq:
            return metaio_volume(seq)
    raise InputError(
        p, "unknown volume format", "use NIfTI (.nii, .nii.gz), NRRD (.nrrd) or MetaIO (.mha)"
    )


#: MetaIO geometry fields and the other names ITK's MetaImage reads them under.
_METAIO_GEOMETRY = {
    "ElementSpacing": ("ElementSpacing",),
    "Offset": ("Offset", "Origin", "Position"),
    "TransformMatrix": ("TransformMatrix", "Rotation", "Orientation"),
}


def metaio_volume(seq: Sequence) -> Volume:
    """The one 3D image of an open MetaIO file as a :class:`Volume` (RAS mm).

    Read as ITK (so 3D Slicer) reads it: MetaIO's world is LPS, voxel ``[i, j, k]`` is at
    ``Offset + sum_a index_a * ElementSpacing_a * row_a(TransformMatrix)`` (row ``a`` of the
    file's matrix is the direction of axis ``a``); lengths are mm. Missing fields take
    MetaIO's defaults (spacing 1, offset 0, identity); ``AnatomicalOrientation`` is ignored,
    as ITK ignores it. A ``usnav reconstruct`` ``.mha`` thus loads where its ``.nii`` does.

    Raises
    ------
    InputError
        Not exactly one frame, not 3D, more than one channel, or a geometry field that is not
        the right count of finite numbers.
    """
    path = seq.path
    if len(seq) != 1 or len(seq.frame_shape) < 3 or seq.channels != 1:
        what = (
            f"{len(seq)} frames"
            if len(seq) != 1
            else f"{seq.channels} channels per voxel"
            if seq.channels != 1
            else f"one {seq.image_size[0]} × {seq.image_size[1]} image (2D)"
        )
        raise InputError(path, f"holds {what}, not one 3D grey volume", "give a 3D volume")
    fields = {key.lower(): (key, value) for key, value in seq.header.items()}

    def numbers(name: str, count: int) -> np.ndarray | None:
        for alias in _METAIO_GEOMETRY[name]:
            if alias.lower() in fields:
                key, text = fields[alias.lower()]
                try:
                    values = np.array([float(v) for v in text.split()])
                except ValueError:
                    values = np.array([])
                if values.size != count or not np.isfinite(values).all():
                    raise InputError(
                        path,
                        f"{key} = {text!r} is not {count} numbers",
                        "write the volume again (e.g. from 3D Slicer)",
                    )
                return values
        return None

    spacing = numbers("ElementSpacing", 3)
    offset = numbers("Offset", 3)
    matrix = numbers("TransformMatrix", 9)
    directions = np.eye(3) if matrix is None else matrix.reshape(3, 3).T  # columns = axes
    affine = np.eye(4)
    affine[:3, :3] = directions * (np.ones(3) if spacing is None else spacing)
    affine[:3, 3] = np.zeros(3) if offset is None else offset
    data = np.array(np.transpose(seq.image(0), (2, 1, 0)))  # (slices, rows, cols) → [i, j, k]
    return Volume(
        data,
        LPS_TO_RAS @ affine,
        source=str(path),
        read_as="MetaIO Offset and TransformMatrix in ITK's LPS, converted to RAS; lengths in mm",
    )


@contextlib.contextmanager
def _nibabel_notes() -> Iterator[list[str]]:
    """What nibabel logs while a file is read, collected instead of printed (it printed
    each note twice, through its own handler and the root logger's).

    nibabel is imported first: importing it adds its own stderr handler to this logger, and
    a first NIfTI read of a process (nibabel not imported yet) imported it inside this block,
    so that handler printed the notes all the same (session 40: ``usnav info`` of a NIfTI
    with a zero pixdim printed nibabel's line before its own).
    """
    import nibabel  # noqa: F401  (its logging set-up, before the handlers are swapped)

    logger = logging.getLogger("nibabel.global")
    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    collect = Collect(level=logging.DEBUG)
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = [collect]
    logger.propagate = False
    try:
        yield notes
    finally:
        logger.handlers[:], logger.propagate = saved


def _load_nifti(p: Path, allow_default_affine: bool) -> Volume:
    """A NIfTI file as a :class:`Volume` (RAS mm); the rules are in the module docstring."""
    try:
        with _nibabel_notes() as notes:
            img = _load_nifti_image(p)
            data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(p, f"cannot read NIfTI: {exc}") from exc
    if any("pixdim" in note and "non-zero" in note for note in notes):
        # nibabel would go on with 1 mm: a wrong size for every distance usnav measures
        raise InputError(
            p, "a voxel size (pixdim) is 0", "export it again with its voxel spacing in mm"
        )
    header = img.header
    sform_code = int(header["sform_code"]) if "sform_code" in header else 1
    qform_code = int(header["qform_code"]) if "qform_code" in header else 1
    if sform_code == 0 and qform_code == 0 and not allow_default_affine:
        raise InputError(
            p,
            "NIfTI has no orientation (sform_code = qform_code = 0)",
            "export it again with its scanner orientation",
        )
    while data.ndim > 3 and data.shape[-1] == 1:
        # one volume written with a time or vector axis of 1 (ITK writes (x, y, z, 1, 1))
        data = data[..., 0]
    if data.ndim != 3:
        hint = (
            f"it holds {int(np.prod(data.shape[3:]))} volumes: give one 3D volume"
            if data.ndim > 3
            else "give a 3D volume"
        )
        raise InputError(p, f"expected a 3D volume, got shape {data.shape}", hint)
    unit, mm_per_unit = _nifti_unit(p, int(header["xyzt_units"]) if "xyzt_units" in header else 0)
    to_mm = np.diag([mm_per_unit, mm_per_unit, mm_per_unit, 1.0])
    if sform_code > 0 and qform_code > 0:
        try:
            sform, qform = (to_mm @ header.get_sform(), to_mm @ header.get_qform())
        except Exception as exc:  # nibabel: an invalid quaternion
            raise InputError(p, f"cannot read the qform: {exc}", "write the header again") from exc
        form = _check_forms_agree(p, sform, qform, (sform_code, qform_code), data.shape)
    elif sform_code > 0:
        form = f"sform (code {sform_code})"
    elif qform_code > 0:
        form = f"qform (code {qform_code})"
    else:
        form = "no orientation (sform_code = qform_code = 0): nibabel's scaling-only affine"
    lengths = (
        "length unit not set (xyzt_units 0), taken as mm"
        if unit == "unknown"
        else f"lengths in {unit}" + ("" if mm_per_unit == 1.0 else f", ×{mm_per_unit:g} to mm")
    )
    affine = to_mm @ np.asarray(img.affine, dtype=np.float64)
    return Volume(np.asarray(data), affine, source=str(p), read_as=f"{form}; {lengths}")


def _load_nifti_image(p: Path):
    """The nibabel image of ``p``, compressed or not whatever its name says.

    nibabel goes by the name and failed on a ``.nii.gz`` that is not compressed (ITK, so 3D
    Slicer, reads it: gzip streams pass plain files through) and on a ``.nii`` that is; the
    bytes decide here, as the same volume either way.
    """
    import gzip

    import nibabel as nib

    with open(p, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if compressed == p.name.lower().endswith(".gz"):
        return nib.load(str(p))
    raw = gzip.decompress(p.read_bytes()) if compressed else p.read_bytes()
    try:
        return nib.Nifti1Image.from_bytes(raw)
    except Exception:  # nibabel raises many types; a NIfTI-2 header is the other kind
        return nib.Nifti2Image.from_bytes(raw)


def _nifti_unit(p: Path, xyzt_units: int) -> tuple[str, float]:
    """The spatial unit of a NIfTI header (``xyzt_units`` bits 0-2) and its size in mm."""
    code = xyzt_units & 0x07
    if code not in _NIFTI_MM_PER_UNIT:
        raise InputError(
            p,
            f"xyzt_units has spatial code {code}, not a NIfTI length unit (0-3)",
            "write the header again with its units (nibabel: img.header.set_xyzt_units('mm'))",
        )
    return _NIFTI_MM_PER_UNIT[code]


def _forms_gap_mm(
    first: np.ndarray, second: np.ndarray, shape: tuple[int, ...]
) -> tuple[float, bool]:
    """How far apart (mm) two voxel → world affines place the corners of a grid of ``shape``
    (the outer faces of the corner voxels), and whether one mirrors the other (determinants of
    opposite sign: a one-slice volume mirrored about its middle has its corners in place)."""
    mirrored = bool(np.sign(np.linalg.det(first[:3, :3])) != np.sign(np.linalg.det(second[:3, :3])))
    corners = _grid_corners(shape, 0.5)
    gaps = (corners @ first.T - corners @ second.T)[:, :3]
    return float(np.linalg.norm(gaps, axis=1).max()), mirrored


def _check_forms_agree(
    p: Path,
    sform: np.ndarray,
    qform: np.ndarray,
    codes: tuple[int, int],
    shape: tuple[int, ...],
) -> str:
    """Refuse a NIfTI whose sform and qform (both set) place the volume differently.

    Parameters
    ----------
    p
        The file (for messages).
    sform, qform
        The two 4×4 voxel index → RAS affines, mm.
    codes
        ``sform_code``, ``qform_code`` (both > 0).
    shape
        The volume's (I, J, K).

    Returns
    -------
    str
        Which form is used (the sform) and how close the qform is, for :attr:`Volume.read_as`.

    Raises
    ------
    InputError
        The two place a corner more than :data:`FORMS_AGREE_MM` apart or mirror each other:
        nibabel (and usnav) would use the sform, ITK 5.4 (3D Slicer) the qform unless the sform
        code is 1 or the two nearly agree, so the MRI the surgeon checked may be placed
        elsewhere than usnav places it.
    """
    s_code, q_code = codes
    gap, mirrored = _forms_gap_mm(sform, qform, shape)
    if gap > FORMS_AGREE_MM or mirrored:
        how = f"they place the volume's corners up to {gap:.1f} mm apart" + (
            " and one is the mirror image of the other" if mirrored else ""
        )
        raise InputError(
            p,
            f"sform (code {s_code}) and qform (code {q_code}) disagree: {how}; nibabel and "
            "usnav use the sform, ITK and 3D Slicer may use the qform, so Slicer may show "
            "another placement than usnav uses",
            "write the header again with the right placement in both forms, e.g. with nibabel "
            f"img.set_qform(img.get_sform(), code={s_code}) and nib.save if the sform is right "
            f"(img.set_sform(img.get_qform(), code={q_code}) if the qform is)",
        )
    return f"sform (code {s_code}); the qform (code {q_code}) agrees within {gap:.2g} mm"


def _load_nrrd(p: Path) -> Volume:
    """A NRRD file as a :class:`Volume` (RAS mm); the rules are in the module docstring."""
    import nrrd

    try:
        data, header = nrrd.read(str(p), index_order="F")
    except Exception as exc:
        hint = None
        if "enclosed by parentheses" in str(exc):
            # teem and ITK (3D Slicer) allow spaces inside a vector, pynrrd does not
            hint = (
                "write the vectors of 'space directions'/'space origin' without spaces, "
                "'(0.5,0,0)' rather than '(0.5, 0, 0)', or save the volume again from 3D Slicer"
            )
        raise InputError(p, f"cannot read NRRD: {exc or type(exc).__name__}", hint) from exc
    dirs = header.get("space directions")
    if dirs is None:
        spacings = "'spacings' but " if "spacings" in header else ""
        raise InputError(
            p,
            f"NRRD has {spacings}no 'space directions': no world orientation (ITK and 3D Slicer "
            "would place it unrotated at the origin)",
            "write it with space, space directions and space origin (e.g. save it from Slicer)",
        )
    vectors = []
    for axis, d in enumerate(dirs):
        v = None if d is None else np.asarray(d, dtype=np.float64)
        if v is None or np.all(np.isnan(v)):
            continue  # 'none': a list axis (a segmentation's layers), not a voxel axis
        if not np.all(np.isfinite(v)):
            # was dropped as if 'none', and the volume refused as "expected 3 space directions,
            # got shape (97, 128, 112)" (a 3D shape): the broken number was never named
            raise InputError(
                p,
                f"'space directions' of axis {axis} holds NaN or infinite values "
                f"({', '.join(f'{x:g}' for x in v)})",
                "write the voxel axis in mm, or save the volume again from 3D Slicer",
            )
        vectors.append(v)
    dirs_arr = np.array(vectors)
    kinds = header.get("kinds", [])
    if data.ndim == 4:
        # a segmentation with layers or a list axis: keep the domain axes
        list_axes = [i for i, k in enumerate(kinds) if k not in ("domain", "space")]
        if len(list_axes) == 1 and data.shape[list_axes[0]] == 1:
            data = np.take(data, 0, axis=list_axes[0])
        elif len(list_axes) == 1:
            layers = np.moveaxis(data, list_axes[0], -1)
            # merge layers: later layers win where non-zero
            merged = np.zeros(layers.shape[:3], dtype=layers.dtype)
            for layer in range(layers.shape[3]):
                merged = np.where(layers[..., layer] != 0, layers[..., layer], merged)
            data = merged
    if data.ndim != 3 or dirs_arr.shape != (3, 3):
        raise InputError(
            p,
            f"expected a 3D volume with 3 space directions, got shape {data.shape} and "
            f"{len(vectors)} space direction(s)",
        )
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    to_ras, placement = _nrrd_space(p, header.get("space"))
    to_mm, lengths = _nrrd_units(p, header)
    affine = np.eye(4)
    affine[:3, :3] = dirs_arr.T  # columns = axis directions
    affine[:3, 3] = origin
    affine = to_ras @ to_mm @ affine
    meta = {k: str(v) for k, v in header.items() if isinstance(v, str) and k not in ("space",)}
    return Volume(
        np.asarray(data), affine, source=str(p), meta=meta, read_as=f"{placement}; {lengths}"
    )


def _nrrd_space(p: Path, space: object) -> tuple[np.ndarray, str]:
    """The 4×4 that takes a NRRD's world coordinates to RAS, and how that was decided.

    ``space`` None (only ``space dimension``) or a space without anatomical labels is taken as
    LPS, as ITK's NrrdImageIO (and so 3D Slicer) reads it: it converts RAS and LAS to its LPS
    world and keeps any other space's numbers as they are. Not refused, because the surgeon
    checked the plan in Slicer: reading the file as Slicer shows it keeps usnav on the anatomy
    that was checked, and refusing would only make the user re-save it from Slicer (as LPS).
    """
    if space is None:
        return LPS_TO_RAS, "no 'space' field: taken as LPS, as ITK and 3D Slicer read it"
    name = str(space).lower()
    if name in _NRRD_SPACES:
        return _NRRD_SPACES[name], f"space {space}"
    if name in _NRRD_UNLABELLED_SPACES:
        return LPS_TO_RAS, f"space {space} (no anatomical labels): taken as LPS, as ITK does"
    raise InputError(
        p,
        f"unsupported NRRD space {space!r}",
        "use right-anterior-superior or left-posterior-superior (as Slicer writes)",
    )


def _nrrd_units(p: Path, header: dict) -> tuple[np.ndarray, str]:
    """The 4×4 scaling of a NRRD's world coordinates to mm (``space units``), and a note.

    The units are read from the header's bytes: pynrrd decodes the header as ASCII and drops
    what is not, which turns ``"µm"`` into ``"m"``.
    """
    units = _raw_nrrd_field(p, "space units")
    if units is None:
        if "space units" not in header:
            return np.eye(4), "no space units: taken as mm"
        units = [str(u) for u in header["space units"]]
    scales = []
    for unit in units:
        key = unit.strip().lower()
        if key not in _NRRD_MM_PER_UNIT:
            raise InputError(
                p,
                f"unknown NRRD space unit {unit!r}",
                "write it in mm (or m, cm, µm) in 'space units', or leave the field out for mm",
            )
        scales.append(_NRRD_MM_PER_UNIT[key])
    if len(scales) != 3:
        raise InputError(p, f"NRRD 'space units' has {len(scales)} units, expected 3")
    shown = " ".join(u or '""' for u in units)
    if all(s == 1.0 for s in scales):
        return np.eye(4), f"space units {shown}"
    raise InputError(
        p,
        f"NRRD 'space units' are {shown}, not mm; ITK and 3D Slicer ignore them and read the "
        "numbers as mm, so usnav and Slicer would place this volume at different sizes",
        "write the volume in mm (e.g. resave it from 3D Slicer)",
    )


def _raw_nrrd_field(p: Path, name: str) -> list[str] | None:
    """The quoted strings of header field ``name`` as written (UTF-8, else Latin-1), or None."""
    wanted = name.encode() + b":"
    with open(p, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if not line:  # the blank line that ends an attached header
                return None
            if line.startswith(wanted):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    text = line.decode("latin-1")
                return re.findall(r'"([^"]*)"', text[len(name) + 1 :])
    return None


def save_volume(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI (RAS, mm) or NRRD (written in LPS, as Slicer and ITK expect).

    The NIfTI gets its affine as sform (code 1) and, where a quaternion can hold it (no shear:
    within :data:`QFORM_EXACT_MM`), as qform (code 1) too, so that every reader places it
    alike; ``xyzt_units`` says mm. A sheared affine is written as the sform alone: ITK (3D
    Slicer) refuses such a NIfTI rather than place it elsewhere than usnav; write NRRD to open
    a sheared volume in Slicer. Boolean voxels are written as uint8 (neither format has a
    boolean type); 64-bit integers keep their type.
    """
    p = Path(path)
    name = p.name.lower()
    data = np.asarray(volume.data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        # nibabel refuses 64-bit integers unless the type is given (other tools may not read
        # them); the voxels are written as they are rather than narrowed
        img = nib.Nifti1Image(data, volume.affine, dtype=data.dtype)
        img.set_sform(volume.affine, code=1)
        img.set_qform(volume.affine, code=1)
        gap, mirrored = _forms_gap_mm(volume.affine, img.get_qform(), volume.shape)
        if gap > QFORM_EXACT_MM or mirrored:
            img.set_qform(None, code=0)  # a sheared affine: the sform alone says it
        img.header.set_xyzt_units("mm")
        nib.save(img, str(p))
        return p
    if name.endswith(".nrrd"):
        import nrrd

        lps = LPS_TO_RAS @ volume.affine
        header = {
            "space": "left-posterior-superior",
            "space directions": lps[:3, :3].T,
            "space origin": lps[:3, 3],
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip",
        }
        nrrd.write(str(p), data, header, index_order="F")
        return p
    raise InputError(p, "unknown volume format", "use .nii, .nii.gz or .nrrd")
