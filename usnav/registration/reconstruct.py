"""Freehand volume reconstruction compatible with PLUS (``vtkPlusVolumeReconstructor``).

The output grid follows PLUS exactly: the corners of each frame's clip rectangle (pixel
coordinates ``max(0, clip origin) … min(cols − 1, clip origin + clip size)``) are mapped by
``ImageToReference``; the volume origin is their minimum and the extent
``round((max − min) / spacing)`` voxels along each Reference axis (so ``extent + 1`` voxels;
PLUS's test baseline rounds, see :func:`output_grid`).
Pixels are pasted by nearest neighbour or trilinear splatting with MEAN (or MAXIMUM)
compounding, and empty voxels are filled by PLUS's STICK rule. LINEAR with MAXIMUM follows
PLUS's own rule exactly (a voxel takes the brightest pixel whose trilinear weight to it is at
least 1/8, in PLUS's 14-bit fixed point; see
:func:`usnav.registration._kernels.paste_slice_linear_maximum`) and is voxel-equal to PLUS's
reference volume. The volume lives in the
Reference frame (mm). :func:`save_reconstruction` writes it in PLUS's orientation: a ``.mha``
with PLUS's header (``Offset`` = the Reference origin), and NIfTI/NRRD placed where ITK and 3D
Slicer show PLUS's ``.mha`` (Reference read as LPS), so ``usnav info`` and Slicer show usnav's
and PLUS's reconstructions side by side, not mirrored.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from usnav.config.plus_xml import read_xml_root
from usnav.errors import ConfigError, InputError
from usnav.io._metaio import format_number
from usnav.io.volume import LPS_TO_RAS, Volume, save_volume
from usnav.registration import _kernels as K
from usnav.registration.sweep import Sweep


class ReconstructionOptions(BaseModel):
    """Options of :func:`reconstruct_volume` (PLUS ``<VolumeReconstruction>`` attributes)."""

    model_config = ConfigDict(extra="forbid")

    spacing_mm: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """``OutputSpacing``, mm."""
    clip_origin: tuple[int, int] = (0, 0)
    """``ClipRectangleOrigin``, pixels."""
    clip_size: tuple[int, int] | None = None
    """``ClipRectangleSize``, pixels (None: the whole image)."""
    interpolation: Literal["nearest", "linear"] = "nearest"
    compounding: Literal["mean", "maximum"] = "mean"
    fill_holes: bool = True
    stick_length_limit: int = Field(default=9, ge=2, le=64)
    """``StickLengthLimit`` of the STICK hole filling, voxels."""
    use_fov_mask: bool = False
    """Paste only pixels inside the detected field of view (PLUS pastes the clip rectangle)."""


@dataclass
class Reconstruction:
    """A reconstructed volume.

    Attributes
    ----------
    volume
        uint8 voxels, affine voxel → Reference mm.
    filled
        (X, Y, Z) bool: voxels that received pixels (before hole filling).
    seconds
        Wall time.
    frames
        Frames pasted.
    dropped
        Frames of the recording left out (invalid image, or tracking not OK), as
        :attr:`usnav.registration.sweep.Sweep.dropped` counts them.
    """

    volume: Volume
    filled: np.ndarray
    seconds: float
    frames: int
    dropped: int = 0


def output_grid(sweep: Sweep, options: ReconstructionOptions) -> tuple[np.ndarray, np.ndarray]:
    """PLUS's output origin (Reference mm) and extent (voxels, max index per axis)."""
    cols, rows = sweep.image_size
    min_x, max_x = 0.0, float(cols - 1)
    min_y, max_y = 0.0, float(rows - 1)
    if options.clip_size is not None and options.clip_size[0] > 0 and options.clip_size[1] > 0:
        min_x = max(min_x, float(options.clip_origin[0]))
        max_x = min(max_x, float(options.clip_origin[0] + options.clip_size[0]))
        min_y = max(min_y, float(options.clip_origin[1]))
        max_y = min(max_y, float(options.clip_origin[1] + options.clip_size[1]))
    corners = np.array(
        [[min_x, min_y, 0, 1], [min_x, max_y, 0, 1], [max_x, min_y, 0, 1], [max_x, max_y, 0, 1]]
    )
    pts = np.einsum("fij,cj->fci", sweep.image_to_reference, corners)[..., :3].reshape(-1, 3)
    lo = pts.min(axis=0)
    hi = pts.max(axis=0)
    spacing = np.asarray(options.spacing_mm, dtype=np.float64)
    # PLUS's baseline volume of SpinePhantomFreehand (147 x 106 x 105 voxels for extents of
    # 146.32, 105.31 and 103.85 spacings) implies rounding to the nearest voxel; the current
    # PLUS source writes ceil(), which would give 148 x 107 x 105. We follow the baseline.
    extent = np.floor((hi - lo) / spacing + 0.5).astype(int)
    return lo, extent


#: the longest volume side, voxels: NIfTI-1 stores sizes as int16 (and no sweep spans 16 m)
MAX_SIDE_VOXELS = 32767


def reconstruct_volume(
    sweep: Sweep, options: ReconstructionOptions | None = None, *, max_voxels: int = 400_000_000
) -> Reconstruction:
    """Reconstruct a tracked sweep into a Reference-frame volume (PLUS-compatible).

    Raises
    ------
    InputError
        Empty sweep, or an output grid larger than ``max_voxels`` or with a side longer than
        :data:`MAX_SIDE_VOXELS` (a spacing that is too fine or poses far apart).
    """
    t0 = time.perf_counter()
    opts = options or ReconstructionOptions()
    if len(sweep) == 0:
        raise InputError(sweep.source, "the sweep is empty (no frames)")
    origin, extent = output_grid(sweep, opts)
    shape = tuple(int(e) + 1 for e in extent)
    if max(shape) <= 1:
        raise InputError(
            sweep.source,
            f"a voxel of {' × '.join(f'{v:g}' for v in opts.spacing_mm)} mm holds the whole "
            "sweep: the volume would be a single voxel",
            "give a voxel size near the image's pixel size (e.g. --spacing 0.5)",
        )
    if max(shape) > MAX_SIDE_VOXELS:
        # one OK pose 1 km away gave a 1000019 × 22 × 1 grid (under max_voxels) that NIfTI
        # cannot hold: 'internal error: HeaderDataError' after the pasting
        span = (np.asarray(shape) - 1) * np.asarray(opts.spacing_mm, dtype=np.float64)
        raise InputError(
            sweep.source,
            f"the reconstructed volume would be {shape} voxels, "
            f"{' × '.join(f'{v:.0f}' for v in span)} mm: a side of more than "
            f"{MAX_SIDE_VOXELS} voxels",
            "check the tracking (a pose far from the others) or use a coarser --spacing",
        )
    if int(np.prod(shape, dtype=np.int64)) > max_voxels:
        raise InputError(
            sweep.source,
            f"the reconstructed volume would be {shape} voxels",
            "use a coarser --spacing or check the tracking",
        )
    spacing = np.asarray(opts.spacing_mm, dtype=np.float64)
    index_to_reference = np.eye(4)
    index_to_reference[:3, :3] = np.diag(spacing)
    index_to_reference[:3, 3] = origin
    reference_to_index = np.linalg.inv(index_to_reference)
    acc_value = np.zeros(shape, np.float32)
    acc_weight = np.zeros(shape, np.float32)
    cols, rows = sweep.image_size
    paste_mask = np.zeros((rows, cols), np.uint8)
    cx0, cy0 = opts.clip_origin
    cw, ch = opts.clip_size if opts.clip_size else (cols, rows)
    paste_mask[max(cy0, 0) : min(cy0 + ch, rows), max(cx0, 0) : min(cx0 + cw, cols)] = 1
    if opts.use_fov_mask:
        paste_mask &= sweep.mask().astype(np.uint8)
    paste = K.paste_slice_nearest if opts.interpolation == "nearest" else K.paste_slice_linear
    maximum = opts.compounding == "maximum"
    linear_maximum = maximum and opts.interpolation == "linear"
    hit = np.zeros(shape, np.uint8) if linear_maximum else None
    for f in range(len(sweep)):
        p2v = np.ascontiguousarray((reference_to_index @ sweep.image_to_reference[f])[:3])
        image = np.ascontiguousarray(sweep.images[f], dtype=np.float32)
        mask = (
            paste_mask
            if sweep.frame_masks is None
            else (paste_mask & sweep.frame_masks[f].astype(np.uint8))
        )
        if linear_maximum:
            # PLUS's rule and its fixed-point arithmetic (see the kernel): voxel-equal to
            # PLUS's own LINEAR/MAXIMUM reference volume of SpinePhantomFreehand
            p2v_fixed = np.rint(p2v * (1 << K.FIXED_POINT_BITS)).astype(np.int64)
            K.paste_slice_linear_maximum(image, mask, p2v_fixed, acc_value, hit)
        elif maximum:  # PLUS's nearest-neighbour rule: the brightest pixel of the voxel
            K.paste_slice_nearest(image, mask, p2v, acc_value, acc_weight, True)
        else:
            paste(image, mask, p2v, acc_value, acc_weight)
    filled = hit.astype(bool) if hit is not None else acc_weight > 0
    values = (
        acc_value
        if maximum
        else np.where(filled, acc_value / np.maximum(acc_weight, 1e-9), 0).astype(np.float32)
    )
    if opts.fill_holes:
        out = np.zeros(shape, np.float32)
        K.fill_holes_stick(
            values, filled.astype(np.uint8), K.STICK_DIRECTIONS, int(opts.stick_length_limit), out
        )
        values = out
    data = np.clip(values, 0, 255).astype(np.uint8)  # PLUS truncates to the pixel type
    volume = Volume(data, index_to_reference, source=f"{sweep.source} (reconstructed)")
    return Reconstruction(volume, filled, time.perf_counter() - t0, len(sweep), sweep.dropped)


#: the files a reconstruction can be written to
RECONSTRUCTION_SUFFIXES = (".mha", ".nii", ".nii.gz", ".nrrd")


def check_reconstruction_path(path: str | Path) -> Path:
    """Refuse an output name :func:`save_reconstruction` cannot write, before the work.

    Raises
    ------
    InputError
        The name does not end with one of :data:`RECONSTRUCTION_SUFFIXES`.
    """
    p = Path(path)
    if not p.name.lower().endswith(RECONSTRUCTION_SUFFIXES):
        raise InputError(
            p,
            "unknown volume format",
            "use " + ", ".join(RECONSTRUCTION_SUFFIXES[:-1]) + " or " + RECONSTRUCTION_SUFFIXES[-1],
        )
    return p


def save_reconstruction(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Write a reconstruction in PLUS's orientation.

    ``.mha``: PLUS's own layout (``vtkPlusVolumeReconstructor`` output): ``Offset`` is the
    Reference-frame origin (mm), ``TransformMatrix`` identity, x fastest. ``.nii``/``.nii.gz``/
    ``.nrrd``: the same placement as ITK and 3D Slicer give that ``.mha`` (MetaIO's world is
    LPS), so every format lands on PLUS's volume.

    Parameters
    ----------
    volume
        Affine voxel → Reference mm (axis-aligned, as :func:`reconstruct_volume` makes it).
    path
        ``.mha``, ``.nii``, ``.nii.gz`` or ``.nrrd``.
    """
    p = check_reconstruction_path(path)
    if not p.name.lower().endswith(".mha"):
        return save_volume(Volume(volume.data, LPS_TO_RAS @ volume.affine, volume.source), p)
    data = np.ascontiguousarray(np.transpose(np.asarray(volume.data, np.uint8), (2, 1, 0)))
    payload = zlib.compress(data.tobytes(), 6) if compress else data.tobytes()
    spacing = np.diag(volume.affine[:3, :3])
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "AnatomicalOrientation = RAI",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CenterOfRotation = 0 0 0",
        f"CompressedData = {'True' if compress else 'False'}",
        *([f"CompressedDataSize = {len(payload)}"] if compress else []),
        "DimSize = " + " ".join(str(n) for n in volume.shape),
        "ElementNumberOfChannels = 1",
        "ElementSpacing = " + " ".join(format_number(v) for v in spacing),
        "ElementType = MET_UCHAR",
        "Kinds = domain domain domain",
        "Offset = " + " ".join(format_number(v) for v in volume.affine[:3, 3]),
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "UltrasoundImageOrientation = MFA",
        "UltrasoundImageType = BRIGHTNESS",
        "Seq_Frame0000_ImageStatus = OK",
        "ElementDataFile = LOCAL",
    ]
    with open(p, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        f.write(payload)
    return p


def options_from_plus_xml(path: str | Path) -> ReconstructionOptions:
    """Read ``<VolumeReconstruction>`` of a PLUS device-set XML as :class:`ReconstructionOptions`.

    Raises
    ------
    ConfigError
        No such element, or an attribute that cannot be read.
    """
    root = read_xml_root(path)
    element = root.find(".//VolumeReconstruction")
    if element is None:
        raise ConfigError(path, "no <VolumeReconstruction> element")
    a = element.attrib
    values: dict = {}
    try:
        if "OutputSpacing" in a:
            values["spacing_mm"] = tuple(float(v) for v in a["OutputSpacing"].split())
        if "ClipRectangleOrigin" in a:
            values["clip_origin"] = tuple(int(float(v)) for v in a["ClipRectangleOrigin"].split())
        if "ClipRectangleSize" in a:
            values["clip_size"] = tuple(int(float(v)) for v in a["ClipRectangleSize"].split())
        interp = a.get("Interpolation", "NEAREST_NEIGHBOR").upper()
        values["interpolation"] = "linear" if interp.startswith("LINEAR") else "nearest"
        mode = a.get("CompoundingMode", "MEAN").upper()
        if mode not in ("MEAN", "MAXIMUM"):
            raise ConfigError(
                path, f"CompoundingMode {mode} is not supported", "use MEAN or MAXIMUM"
            )
        values["compounding"] = mode.lower()
        values["fill_holes"] = a.get("FillHoles", "OFF").upper() == "ON"
        stick = element.find(".//HoleFillingElement[@Type='STICK']")
        if values["fill_holes"]:
            if stick is None:
                raise ConfigError(
                    path,
                    "FillHoles is ON but only STICK hole filling is supported",
                    'add a HoleFillingElement Type="STICK"',
                )
            values["stick_length_limit"] = int(stick.attrib.get("StickLengthLimit", 9))
        return ReconstructionOptions(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, f"<VolumeReconstruction>: {exc}") from exc


def load_image_to_probe(path: str | Path) -> np.ndarray:
    """``ImageToProbe`` from a usnav TOML, a PLUS device-set XML or 16 numbers.

    Real PLUS calibrations have some axis skew (the SpinePhantom one is 2.7° off
    perpendicular); :func:`usnav.config.calibration.load_calibration` accepts up to
    :data:`usnav.config.calibration.MAX_AXIS_SKEW_DEG`.

    Raises
    ------
    ConfigError
        No such file, no ImageToProbe, or not rigid × scale.
    """
    from usnav.config.calibration import load_calibration

    return load_calibration(path).image_to_probe
