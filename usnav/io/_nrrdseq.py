"""NRRD (``.seq.nrrd`` / ``.igs.nrrd``) sequence headers, as IGSIO's ``vtkIGSIONrrdSequenceIO``.

``NRRD0004``, two ``#`` comment lines, ``field: value`` lines (std::map order: dimension,
encoding, endian, kinds, sizes, space dimension, space directions, space origin, type), then
``key:=value`` pairs (``ultrasound image orientation``, ``ultrasound image type``, the
``Seq_FrameNNNN_<Field>`` fields with the image status as ``Seq_FrameNNNN_Status``), a blank
line, and the data (``raw`` or one ``gz`` stream).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from usnav.errors import InputError
from usnav.io._metaio import format_number
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

_END = re.compile(rb"\n\r?\n")

_NRRD_TO_NUMPY = {
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i1": ("signed char", "int8", "int8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": (
        "longlong",
        "long long",
        "long long int",
        "signed long long",
        "signed long long int",
        "int64",
        "int64_t",
    ),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
NRRD_TYPES = {name: code for code, names in _NRRD_TO_NUMPY.items() for name in names}
NUMPY_TO_NRRD = {
    "u1": "unsigned char",
    "i1": "signed char",
    "u2": "unsigned short",
    "i2": "short",
    "u4": "unsigned int",
    "i4": "int",
    "u8": "unsigned long long",
    "i8": "long long",
    "f4": "float",
    "f8": "double",
}

#: Fields (``key: value``) that describe the layout; custom ``key:=value`` pairs are kept.
STRUCTURAL_KEYS = frozenset(
    (
        "dimension",
        "type",
        "encoding",
        "endian",
        "sizes",
        "kinds",
        "space",
        "space dimension",
        "space directions",
        "space origin",
        "space units",
        "spacings",
        "thicknesses",
        "axis mins",
        "axis maxs",
        "centers",
        "centerings",
        "labels",
        "units",
        "data file",
        "datafile",
        "byte skip",
        "byteskip",
        "line skip",
        "lineskip",
        "content",
        "min",
        "max",
        "old min",
        "old max",
        "measurement frame",
        "sample units",
        "ultrasound image orientation",
        "ultrasound image type",
    )
)

ORIENTATION_KEY = "ultrasound image orientation"
IMAGE_TYPE_KEY = "ultrasound image type"


def _split(line: str) -> tuple[str, str] | None:
    colon = line.find(":")
    if colon <= 0:
        return None
    key = line[:colon].strip()
    rest = line[colon + 1 :]
    if rest.startswith("="):
        rest = rest[1:]
    return key, rest.strip()


def read_nrrd_layout(path: Path) -> Layout:
    """Parse a PLUS NRRD sequence header (pixels untouched).

    Raises
    ------
    InputError
        Not NRRD, no blank line ending the header, bad dimension/sizes/kinds/type,
        unsupported encoding.
    """
    with open(path, "rb") as f:
        magic = f.read(8)
    if not magic.startswith(b"NRRD"):
        raise InputError(path, "not a NRRD file (does not start with 'NRRD000x')")
    if magic[4:7] != b"000" or magic[7:8] not in b"12345":
        raise InputError(
            path,
            f"unknown NRRD version {magic.decode('latin-1')!r}",
            "NRRD0001 to NRRD0005 are read (IGSIO writes NRRD0004)",
        )
    text, offset = read_header_block(
        path,
        _END,
        "blank line ending the NRRD header",
        "the header is cut short or the file is not a NRRD sequence",
    )
    raw = RawHeader(data_offset=offset)
    lines = text.split(b"\n", 1)
    split_lines(
        path,
        lines[1] if len(lines) > 1 else b"",
        _split,
        raw,
        comment="#",
    )
    dim_text = raw.get("dimension")
    try:
        dimension = int(dim_text) if dim_text is not None else None
    except ValueError:
        raise InputError(path, f"dimension is not an integer: {dim_text!r}") from None
    sizes = parse_int_list(path, "sizes", raw.get("sizes"))
    if dimension is not None and len(sizes) != dimension:
        raise InputError(path, f"sizes has {len(sizes)} numbers but dimension = {dimension}")
    kinds_text = raw.get("kinds")
    kinds = kinds_text.split() if kinds_text else None
    n_frames, spatial, ndim_spatial, channels, axes = interpret_axes(
        path, sizes, kinds, bool(raw.frames), 1
    )
    for key in ("byte skip", "byteskip", "line skip", "lineskip"):
        skip = raw.get(key)
        if skip is not None and skip.strip() not in ("", "0"):
            raise InputError(
                path,
                f"'{key}: {skip.strip()}' is not supported (PLUS and usnav read the data "
                "right after the header)",
                f"rewrite the file without {key} (e.g. with 3D Slicer or pynrrd)",
            )
    type_text = (raw.get("type") or "").strip().lower()
    if type_text not in NRRD_TYPES:
        raise InputError(
            path,
            f"unsupported NRRD type {type_text!r}",
            "use unsigned char, unsigned short, short, float...",
        )
    code = NRRD_TYPES[type_text]
    endian = (raw.get("endian") or "little").strip().lower()
    if endian not in ("little", "big"):
        raise InputError(path, f"endian: {endian!r} is not little or big", "fix the endian field")
    dtype = np.dtype((">" if endian == "big" else "<") + code)
    encoding_text = (raw.get("encoding") or "raw").strip().lower()
    if encoding_text in ("gz", "gzip"):
        encoding = "gzip"
    elif encoding_text == "raw":
        encoding = "raw"
    else:
        raise InputError(
            path,
            f"NRRD encoding {encoding_text!r} is not supported",
            "use raw or gz (as PLUS writes)",
        )
    data_file = raw.get("data file") or raw.get("datafile")
    if data_file:
        data_path, data_offset = path.parent / data_file, 0
        if not data_path.is_file():
            raise InputError(path, f"data file {data_file} not found next to the header")
    else:
        data_path, data_offset = path, offset
    return Layout(
        path=path,
        format="nrrd",
        raw=raw,
        n_frames=n_frames,
        spatial=spatial,
        ndim_spatial=ndim_spatial,
        channels=channels,
        dtype=dtype,
        encoding=encoding,
        data_path=data_path,
        data_offset=data_offset,
        data_length=None,
        orientation=raw.get(ORIENTATION_KEY),
        image_type=raw.get(IMAGE_TYPE_KEY),
        status_field="Status",
        axis_kinds=axes,
        axis_sizes=tuple(sizes),
    )


def format_nrrd_header(
    *,
    n_frames: int,
    spatial: tuple[int, int, int],
    ndim_spatial: int,
    channels: int,
    dtype: np.dtype,
    compressed: bool,
    orientation: str,
    image_type: str,
    frame_fields: list[dict[str, str]],
    extra_fields: dict[str, str] | None = None,
    spacing: tuple[float, ...] | None = None,
    offset: tuple[float, ...] | None = None,
    directions: list[list[float]] | None = None,
) -> bytes:
    """Header bytes of a PLUS NRRD sequence, including the blank line that ends it.

    ``frame_fields[i]`` holds frame i's fields with the image status under ``Status``
    (written last). ``space directions`` are ``directions[i]`` (identity when None) times
    the spacing. ``dtype`` is the byte order of the pixels as stored (little-endian from
    :class:`SequenceWriter`, as IGSIO writes; IGSIO ignores ``endian`` when it reads).
    """
    cols, rows, slices = spatial
    sizes = [str(cols), str(rows)] + ([str(slices)] if ndim_spatial == 3 else [])
    kinds = ["domain"] * ndim_spatial
    if channels > 1:
        sizes.insert(0, str(channels))
        kinds.insert(0, "vector")
    sizes.append(str(n_frames))
    kinds.append("list")
    spacing_v = list(spacing or ()) + [1.0] * (ndim_spatial - len(spacing or ()))
    offset_v = list(offset or ()) + [0.0] * (ndim_spatial - len(offset or ()))
    axes = direction_matrix(directions, ndim_spatial, ndim_spatial)
    vectors = [
        "(" + ",".join(format_number(spacing_v[i] * x + 0.0) for x in axes[i]) + ")"
        for i in range(ndim_spatial)
    ]
    if channels > 1:
        vectors.insert(0, "none")
    vectors.append("none")
    fields = {
        "dimension": str(len(sizes)),
        "encoding": "gz" if compressed else "raw",
        "endian": "big" if dtype.byteorder == ">" else "little",
        "kinds": pad_last_token("kinds: ", kinds),
        "sizes": pad_last_token("sizes: ", sizes),
        "space dimension": str(ndim_spatial),
        "space directions": " ".join(vectors),
        "space origin": "(" + ",".join(format_number(v) for v in offset_v[:ndim_spatial]) + ")",
        "type": NUMPY_TO_NRRD[dtype.newbyteorder("<").str[1:]],
    }
    out = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
    ]
    out += [f"{key}: {fields[key]}" for key in sorted(fields)]
    out.append(f"{ORIENTATION_KEY}:={orientation}")
    out.append(f"{IMAGE_TYPE_KEY}:={image_type}")
    for key, value in (extra_fields or {}).items():
        if key.lower() not in STRUCTURAL_KEYS and not key.lower().startswith("seq_frame"):
            out.append(f"{key}:={value}")
    for index, ff in enumerate(frame_fields):
        names = sorted(k for k in ff if k != "Status")
        out += [f"{frame_field_name(index, k)}:={ff[k]}" for k in names]
        if "Status" in ff:
            out.append(f"{frame_field_name(index, 'Status')}:={ff['Status']}")
    return ("\n".join(out) + "\n\n").encode("utf-8", errors="surrogateescape")
