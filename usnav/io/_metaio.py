"""MetaIO (``.igs.mha`` / ``.mha``) sequence headers: parse any key order, write PLUS's order.

Reading follows IGSIO's ``vtkIGSIOMetaImageSequenceIO``: ``Key = Value`` lines in any order,
keys compared case-insensitively, ``Seq_FrameNNNN_<Field>`` per-frame fields, and the header
ends at ``ElementDataFile``. Writing reproduces IGSIO's layout: ``ObjectType`` first, ``NDims``
second, the other sequence fields sorted by name (std::map order), the per-frame fields of
each frame sorted by name with ``ImageStatus`` last, and ``ElementDataFile = LOCAL`` last;
``DimSize``, ``Kinds`` and ``CompressedDataSize`` padded to 40-character lines.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from usnav.errors import InputError
from usnav.io._seqheader import (
    Layout,
    RawHeader,
    direction_matrix,
    frame_field_name,
    interpret_axes,
    pad_last_token,
    parse_int_list,
    read_header_block,
    split_lines,
)

_END = re.compile(rb"(?im)^[ \t]*ElementDataFile[ \t]*=[^\n]*(?:\n|\Z)")

#: MetaIO element types ↔ numpy (little-endian unless BinaryDataByteOrderMSB).
MET_TO_NUMPY = {
    "MET_UCHAR": "u1",
    "MET_CHAR": "i1",
    "MET_ASCII_CHAR": "i1",
    "MET_USHORT": "u2",
    "MET_SHORT": "i2",
    "MET_UINT": "u4",
    "MET_INT": "i4",
    "MET_ULONG": "u4",
    "MET_LONG": "i4",
    "MET_ULONG_LONG": "u8",
    "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}
NUMPY_TO_MET = {
    "u1": "MET_UCHAR",
    "i1": "MET_CHAR",
    "u2": "MET_USHORT",
    "i2": "MET_SHORT",
    "u4": "MET_UINT",
    "i4": "MET_INT",
    "u8": "MET_ULONG_LONG",
    "i8": "MET_LONG_LONG",
    "f4": "MET_FLOAT",
    "f8": "MET_DOUBLE",
}

#: Sequence-level keys that describe the file layout (rewritten, not copied, on conversion).
STRUCTURAL_KEYS = frozenset(
    k.lower()
    for k in (
        "ObjectType",
        "NDims",
        "AnatomicalOrientation",
        "BinaryData",
        "BinaryDataByteOrderMSB",
        "ElementByteOrderMSB",
        "CenterOfRotation",
        "CompressedData",
        "CompressedDataSize",
        "DimSize",
        "Kinds",
        "ElementSpacing",
        "ElementType",
        "ElementNumberOfChannels",
        "Offset",
        "Origin",
        "Position",
        "TransformMatrix",
        "Rotation",
        "Orientation",
        "UltrasoundImageOrientation",
        "UltrasoundImageType",
        "ElementDataFile",
    )
)


def _split(line: str) -> tuple[str, str] | None:
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not key:
        return None
    return key, value.strip()


#: Keys a MetaIO writer puts on line 1: ``ObjectType`` (PLUS, IGSIO, ITK, VTK, 3D Slicer,
#: usnav), ``Comment`` (MetaIO's writer, when the image has one) or ``NDims`` (a header
#: written by hand, which the format sniffer also takes).
_FIRST_KEYS = ("objecttype", "comment", "ndims")


def _check_first_line(path: Path, text: bytes) -> None:
    """Refuse a header whose first line is not one a MetaIO writer starts with.

    PLUS recognises a sequence file by its first line alone (``CanReadFile``: exactly
    ``ObjectType = Image``). A first line that is not a field, or a field no writer puts
    first, means the start of the file was damaged (bytes overwritten, a text editor's
    re-encoding) or the file is not MetaIO: whatever that line held is lost.

    Raises
    ------
    InputError
        Line 1 is not ``ObjectType = ...``, ``Comment = ...`` or ``NDims = ...``.
    """
    line = text.split(b"\n", 1)[0].rstrip(b"\r")
    kv = _split(line.decode("utf-8", errors="surrogateescape"))
    if kv is not None and kv[0].lower() in _FIRST_KEYS:
        return
    shown = line[:60].decode("utf-8", errors="backslashreplace")
    raise InputError(
        path,
        f"line 1 is '{shown}', expected 'ObjectType = Image' (the line PLUS recognises "
        "a sequence file by)",
        "the start of the file is damaged or it is not a MetaIO (.mha) file: restore "
        "line 1 as 'ObjectType = Image' or use the original recording",
    )


def read_metaio_layout(path: Path) -> Layout:
    """Parse a MetaIO sequence header (pixels untouched).

    Raises
    ------
    InputError
        Not MetaIO, a damaged first line, no ``ElementDataFile``, bad
        ``NDims``/``DimSize``/``Kinds``/``ElementType``, ASCII pixel data, unsupported data
        file.
    """
    text, offset = read_header_block(
        path,
        _END,
        "'ElementDataFile = LOCAL'",
        "the header is cut short or the file is not a MetaIO (.mha) file",
        literal=b"ElementDataFile",
    )
    _check_first_line(path, text)
    raw = RawHeader(data_offset=offset)
    split_lines(path, text, _split, raw)
    object_type = raw.get("ObjectType")
    if object_type is not None and object_type.lower() != "image":
        raise InputError(path, f"ObjectType = {object_type}, expected Image")
    ndims_text = raw.get("NDims")
    try:
        ndims = int(ndims_text) if ndims_text is not None else None
    except ValueError:
        raise InputError(path, f"NDims is not an integer: {ndims_text!r}") from None
    sizes = parse_int_list(path, "DimSize", raw.get("DimSize"))
    kinds_text = raw.get("Kinds")
    kinds = kinds_text.split() if kinds_text else None
    vector_axes = sum(1 for k in (kinds or []) if k.lower() == "vector")
    # IGSIO reads one size per entry of Kinds; the axes NDims counts beyond them default to
    # 1 (a PLUS file of one frame: NDims = 3, DimSize = 6 5, Kinds = domain domain)
    single_frame = (
        kinds is not None
        and ndims is not None
        and len(kinds) == len(sizes)
        and len(sizes) < ndims + vector_axes
    )
    if ndims is not None and len(sizes) != ndims + vector_axes and not single_frame:
        raise InputError(
            path,
            f"DimSize has {len(sizes)} numbers ({' '.join(map(str, sizes))}) but NDims = {ndims}",
            "DimSize needs one size per dimension",
        )
    channels_text = raw.get("ElementNumberOfChannels", "1")
    try:
        channels_field = int(channels_text or "1")
    except ValueError:
        raise InputError(
            path, f"ElementNumberOfChannels is not an integer: {channels_text!r}"
        ) from None
    n_frames, spatial, ndim_spatial, channels, axes = interpret_axes(
        path, sizes, kinds, bool(raw.frames), channels_field
    )
    element_type = (raw.get("ElementType") or "MET_UCHAR").upper()
    if element_type not in MET_TO_NUMPY:
        raise InputError(
            path, f"unsupported ElementType {element_type}", f"supported: {', '.join(MET_TO_NUMPY)}"
        )
    msb = raw.get("BinaryDataByteOrderMSB") or raw.get("ElementByteOrderMSB") or "False"
    dtype = np.dtype((">" if msb.strip().lower() == "true" else "<") + MET_TO_NUMPY[element_type])
    if (raw.get("BinaryData") or "True").strip().lower() != "true" and spatial[0] > 0:
        raise InputError(
            path,
            "BinaryData = False (ASCII pixels) is not supported",
            "PLUS reads binary pixel data only",
        )
    compressed = (raw.get("CompressedData") or "False").strip().lower() == "true"
    data_length: int | None = None
    if compressed:
        size_text = (raw.get("CompressedDataSize") or "").strip()
        if size_text:
            try:
                data_length = int(size_text)
            except ValueError:
                raise InputError(
                    path, f"CompressedDataSize is not an integer: {size_text!r}"
                ) from None
    data_file = raw.get("ElementDataFile") or ""
    if data_file.upper() == "LOCAL":
        data_path, data_offset = path, offset
    elif data_file and not data_file.upper().startswith("LIST") and "%" not in data_file:
        data_path, data_offset = path.parent / data_file, 0
        if not data_path.is_file():
            raise InputError(path, f"ElementDataFile {data_file} not found next to the header")
    else:
        raise InputError(
            path,
            f"ElementDataFile = {data_file!r} is not supported",
            "use LOCAL (.mha) or one data file (.mhd + .raw/.zraw)",
        )
    return Layout(
        path=path,
        format="metaio",
        raw=raw,
        n_frames=n_frames,
        spatial=spatial,
        ndim_spatial=ndim_spatial,
        channels=channels,
        dtype=dtype,
        encoding="zlib" if compressed else "raw",
        data_path=data_path,
        data_offset=data_offset,
        data_length=data_length,
        orientation=raw.get("UltrasoundImageOrientation"),
        image_type=raw.get("UltrasoundImageType"),
        status_field="ImageStatus",
        axis_kinds=axes,
        axis_sizes=tuple(sizes),
    )


def format_metaio_header(
    *,
    n_frames: int,
    spatial: tuple[int, int, int],
    ndim_spatial: int,
    channels: int,
    dtype: np.dtype,
    compressed_size: int | None,
    orientation: str,
    image_type: str,
    frame_fields: list[dict[str, str]],
    extra_fields: dict[str, str] | None = None,
    spacing: tuple[float, ...] | None = None,
    offset: tuple[float, ...] | None = None,
    directions: list[list[float]] | None = None,
) -> bytes:
    """Header bytes of a PLUS sequence metafile, up to and including ``ElementDataFile``.

    ``frame_fields[i]`` holds frame i's fields (``ImageStatus`` included; it is written
    last). ``compressed_size`` None means uncompressed. ``spacing``/``offset`` give the
    pixel axes' ElementSpacing / Offset (default 1 and 0: PLUS keeps mm scaling in
    ImageToProbe). ``directions[i]`` is the direction of pixel axis i: row i of
    ``TransformMatrix`` (identity when None; the frame axis keeps its identity row).
    ``dtype`` is the byte order of the pixels as stored: :class:`SequenceWriter` stores them
    little-endian, since IGSIO ignores ``BinaryDataByteOrderMSB`` when it reads.
    """
    cols, rows, slices = spatial
    n_space = ndim_spatial + 1  # + the frame axis, as IGSIO writes a time series
    dims = [str(cols), str(rows)] + ([str(slices)] if ndim_spatial == 3 else [])
    kinds = ["domain"] * ndim_spatial
    if channels > 1:
        dims.insert(0, str(channels))
        kinds.insert(0, "vector")
    dims.append(str(n_frames))
    kinds.append("list")
    spacing_v = list(spacing or ()) + [1.0] * (n_space - len(spacing or ()))
    offset_v = list(offset or ()) + [0.0] * (n_space - len(offset or ()))
    matrix = direction_matrix(directions, n_space, ndim_spatial)
    transform_matrix = " ".join(format_number(v) for v in matrix.ravel())
    fields: dict[str, str] = {
        "AnatomicalOrientation": "RAI",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "True" if dtype.byteorder == ">" else "False",
        "CenterOfRotation": " ".join(["0"] * n_space),
        "CompressedData": "True" if compressed_size is not None else "False",
        "DimSize": pad_last_token("DimSize = ", dims),
        "ElementNumberOfChannels": str(channels),
        "ElementSpacing": " ".join(format_number(v) for v in spacing_v[:n_space]),
        "ElementType": NUMPY_TO_MET[dtype.newbyteorder("<").str[1:]],
        "Kinds": pad_last_token("Kinds = ", kinds),
        "Offset": " ".join(format_number(v) for v in offset_v[:n_space]),
        "TransformMatrix": transform_matrix,
        "UltrasoundImageOrientation": orientation,
        "UltrasoundImageType": image_type,
    }
    if compressed_size is not None:
        fields["CompressedDataSize"] = f"{compressed_size}".ljust(40 - len("CompressedDataSize = "))
    for key, value in (extra_fields or {}).items():
        if key.lower() not in STRUCTURAL_KEYS and not key.lower().startswith("seq_frame"):
            fields[key] = value
    out = ["ObjectType = Image", f"NDims = {n_space}"]
    out += [f"{key} = {fields[key]}" for key in sorted(fields)]
    for index, ff in enumerate(frame_fields):
        names = sorted(k for k in ff if k != "ImageStatus")
        out += [f"{frame_field_name(index, k)} = {ff[k]}" for k in names]
        if "ImageStatus" in ff:
            out.append(f"{frame_field_name(index, 'ImageStatus')} = {ff['ImageStatus']}")
    out.append("ElementDataFile = LOCAL")
    return ("\n".join(out) + "\n").encode("utf-8", errors="surrogateescape")


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float; integers without ``.0``."""
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
