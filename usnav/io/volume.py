"""Volumes (preoperative MRI, tumor label maps) in RAS world space.

One type, :class:`Volume`: a voxel array indexed ``[i, j, k]`` and the 4×4 affine from voxel
index to RAS mm (nibabel's convention). NIfTI is RAS already; NRRD files in LPS (ITK, Slicer's
default) are converted here, once, on load and save.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.errors import InputError
from usnav.io.inputs import require_existing

#: diag(-1, -1, 1, 1): flips between LPS and RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_NRRD_SPACES = {
    "right-anterior-superior": np.eye(4),
    "ras": np.eye(4),
    "left-posterior-superior": LPS_TO_RAS,
    "lps": LPS_TO_RAS,
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0, 1.0]),
}


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
    """

    data: np.ndarray
    affine: np.ndarray
    source: str = "<memory>"
    meta: dict[str, str] = field(default_factory=dict)

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
        corners = np.array(
            [
                [i, j, k, 1.0]
                for i in (0, self.shape[0] - 1)
                for j in (0, self.shape[1] - 1)
                for k in (0, self.shape[2] - 1)
            ]
        )
        world = corners @ self.affine.T
        return world[:, :3].min(axis=0), world[:, :3].max(axis=0)

    def check_finite(self) -> None:
        """Raise :class:`InputError` if the voxels hold NaN or infinite values."""
        if np.issubdtype(self.data.dtype, np.floating) and not np.all(np.isfinite(self.data)):
            bad = int(np.count_nonzero(~np.isfinite(self.data)))
            raise InputError(
                self.source,
                f"{bad} voxels are NaN or infinite",
                "fix or mask them before using this volume",
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
    """Load a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.seg.nrrd``) volume.

    Parameters
    ----------
    path
        The file.
    allow_default_affine
        Accept a NIfTI whose sform and qform codes are both 0 (no real orientation: nibabel
        then invents a scaling-only affine). Refused by default, because registering to a
        volume of unknown orientation gives a confident wrong answer.

    Raises
    ------
    InputError
        Missing file, unreadable header, unsupported format, unusable affine.
    """
    p = Path(path)
    require_existing(p)
    if p.is_dir():
        raise InputError(p, "is a folder, expected a volume file (.nii, .nii.gz, .nrrd)")
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(p, allow_default_affine)
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return _load_nrrd(p)
    raise InputError(p, "unknown volume format", "use NIfTI (.nii, .nii.gz) or NRRD (.nrrd)")


@contextlib.contextmanager
def _nibabel_notes() -> Iterator[list[str]]:
    """What nibabel logs while a file is read, collected instead of printed (it printed
    each note twice, through its own handler and the root logger's)."""
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
    import nibabel as nib

    try:
        with _nibabel_notes() as notes:
            img = nib.load(str(p))
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
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(p, f"expected a 3D volume, got shape {data.shape}")
    return Volume(np.asarray(data), img.affine, source=str(p))


def _load_nrrd(p: Path) -> Volume:
    import nrrd

    try:
        data, header = nrrd.read(str(p), index_order="F")
    except Exception as exc:
        raise InputError(p, f"cannot read NRRD: {exc or type(exc).__name__}") from exc
    dirs = header.get("space directions")
    if dirs is None:
        raise InputError(p, "NRRD has no 'space directions'", "it needs a world orientation")
    dirs = [d for d in dirs if d is not None and not (isinstance(d, float) and np.isnan(d))]
    dirs_arr = np.array(
        [
            np.asarray(d, dtype=np.float64)
            for d in dirs
            if np.all(np.isfinite(np.asarray(d, dtype=np.float64)))
        ]
    )
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
        raise InputError(p, f"expected a 3D volume with 3 space directions, got shape {data.shape}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = str(header.get("space", "right-anterior-superior")).lower()
    if space not in _NRRD_SPACES:
        raise InputError(p, f"unsupported NRRD space {space!r}", "use RAS or LPS")
    affine = np.eye(4)
    affine[:3, :3] = dirs_arr.T  # columns = axis directions
    affine[:3, 3] = origin
    affine = _NRRD_SPACES[space] @ affine
    meta = {k: str(v) for k, v in header.items() if isinstance(v, str) and k not in ("space",)}
    return Volume(np.asarray(data), affine, source=str(p), meta=meta)


def save_volume(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI (RAS) or NRRD (written in LPS, as Slicer and ITK expect)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.Nifti1Image(volume.data, volume.affine)
        img.set_sform(volume.affine, code=1)
        img.set_qform(volume.affine, code=1)
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
        nrrd.write(str(p), np.asarray(volume.data), header, index_order="F")
        return p
    raise InputError(p, "unknown volume format", "use .nii, .nii.gz or .nrrd")
