"""Codec against golden bytes derived from the OpenIGTLink specification.

The expected bytes below are written out by hand from the spec tables and the worked examples
in docs/references.md §1.6 (checked there against the OpenIGTLink C++ library), not produced
by usnav's encoder.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from igtl_helpers import crc64_bitwise

from usnav.igtl.codec import (
    ImageContent,
    Message,
    Point,
    PointContent,
    PolyDataContent,
    ProtocolError,
    RawContent,
    StatusContent,
    StringContent,
    TransformContent,
    decode_body,
    decode_header,
    encode,
    fraction_to_nanoseconds,
    nanoseconds_to_fraction,
    timestamp_from_wire,
    timestamp_to_wire,
)

# docs/references.md §1.6 Example 1, row by row (offsets 0x000-0x069).
EX1 = bytes.fromhex(
    "00 01 54 52 41 4e 53 46 4f 52 4d 00 00 00 50 72"
    "6f 62 65 54 6f 52 65 66 65 72 65 6e 63 65 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "00 30 ac f6 86 24 88 0f 70 5e 3f 80 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 3f 80 00 00 00 00"
    "00 00 00 00 00 00 00 00 00 00 3f 80 00 00 3f 80"
    "00 00 40 00 00 00 40 40 00 00"
)

TRANSFORM_BODY = EX1[58:]


def _header(version, mtype, name, ts, body):
    return struct.pack(
        ">H12s20sQQQ", version, mtype.encode(), name.encode(), ts, len(body), crc64_bitwise(body)
    )


def _ex2() -> bytes:
    ext = bytes.fromhex("000c001200000020 00000007".replace(" ", ""))
    meta_head = bytes.fromhex("0002 000f000300000002 000e000300000001".replace(" ", ""))
    meta = b"TransformStatusOKTransformValid1"
    body = ext + TRANSFORM_BODY + meta_head + meta
    return _header(2, "TRANSFORM", "ProbeToReference", 0x6553F10080000000, body) + body


def _ex3() -> bytes:
    image_header = bytes.fromhex(
        "000101030201"
        "000300020001"
        "3f000000"
        "00000000"
        "00000000"
        "00000000"
        "3f000000"
        "00000000"
        "00000000"
        "00000000"
        "3f800000"
        "41280000"
        "41a20000"
        "41f00000"
        "000000000000"
        "000300020001"
    )
    body = image_header + bytes(range(6))
    return _header(1, "IMAGE", "Image_Reference", 0, body) + body


def _decode(raw: bytes) -> Message:
    header = decode_header(raw[:58], 1 << 20)
    return decode_body(header, bytearray(raw[58:]))


def _identity_translation():
    m = np.eye(4)
    m[:3, 3] = [1, 2, 3]
    return m


def test_ex1_transform_v1_bytes_and_crc():
    assert len(EX1) == 106
    assert crc64_bitwise(TRANSFORM_BODY) == 0xACF68624880F705E
    message = Message("TRANSFORM", "ProbeToReference", TransformContent(_identity_translation()))
    assert encode(message, 1) == EX1
    decoded = _decode(EX1)
    assert decoded.device_name == "ProbeToReference" and decoded.version == 1
    np.testing.assert_array_equal(decoded.content.matrix, _identity_translation())


def test_ex2_transform_v2_with_plus_metadata():
    golden = _ex2()
    assert len(golden) == 168
    assert struct.unpack(">Q", golden[50:58])[0] == 0x4B3A68A3EEF16500
    message = Message(
        "TRANSFORM",
        "ProbeToReference",
        TransformContent(_identity_translation()),
        timestamp=1700000000.5,
        metadata={"TransformValid": "1", "TransformStatus": "OK"},  # sorted on the wire
        message_id=7,
    )
    assert encode(message, 2) == golden
    decoded = _decode(golden)
    assert decoded.metadata == {"TransformStatus": "OK", "TransformValid": "1"}
    assert decoded.message_id == 7 and decoded.version == 2
    assert decoded.timestamp == pytest.approx(1700000000.5, abs=1e-9)


def test_ex3_image_centre_convention_and_dimensions():
    golden = _ex3()
    assert len(golden) == 136
    assert struct.unpack(">Q", golden[50:58])[0] == 0xBE8F35D9D3670D66
    first_voxel = np.diag([0.5, 0.5, 1.0, 1.0])
    first_voxel[:3, 3] = [10, 20, 30]
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)  # 2 rows × 3 columns
    message = Message("IMAGE", "Image_Reference", ImageContent.from_array(image, first_voxel))
    assert encode(message, 1) == golden
    decoded = _decode(golden).content
    np.testing.assert_array_equal(decoded.array, image)
    np.testing.assert_allclose(decoded.ijk_to_ras, first_voxel)
    np.testing.assert_allclose(decoded.spacing_mm, [0.5, 0.5, 1.0])


def test_ex4_slicer_connect_status_v2():
    content = struct.pack(">Hq20s", 1, 0, b"") + b"\0"
    meta_head = struct.pack(">H", 1) + struct.pack(">HHI", 5, 3, 5)
    body = struct.pack(">HHII", 12, len(meta_head), 10, 0) + content + meta_head + b"dummydummy"
    golden = _header(2, "STATUS", "", 0, body) + body
    assert len(golden) == 121
    message = Message("STATUS", "", StatusContent(1, 0, "", ""), metadata={"dummy": "dummy"})
    assert encode(message, 2) == golden
    decoded = _decode(golden)
    assert decoded.content.code == 1 and decoded.metadata == {"dummy": "dummy"}


def test_timestamp_fraction_matches_the_reference_library():
    assert nanoseconds_to_fraction(500_000_000) == 0x80000000
    assert nanoseconds_to_fraction(1) == 0x4
    assert nanoseconds_to_fraction(999_999_999) == 0xFFFFFFD8
    for ns in (0, 1, 123_456_789, 500_000_000, 999_999_999):
        assert abs(fraction_to_nanoseconds(nanoseconds_to_fraction(ns)) - ns) <= 1
    assert timestamp_to_wire(1700000000.5) == 0x6553F10080000000
    assert timestamp_from_wire(timestamp_to_wire(215.102186)) == pytest.approx(215.102186, 1e-9)
    with pytest.raises(ValueError):
        timestamp_to_wire(-1.0)


def test_2d_image_travels_as_cols_rows_1_and_3d_uint16_float32_round_trip():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = encode(Message("IMAGE", "I", ImageContent.from_array(image)), 1)
    ri, rj, rk = struct.unpack(">3H", raw[58 + 6 : 58 + 12])
    assert (ri, rj, rk) == (4, 3, 1)  # i = columns, j = rows
    for dtype, code in ((np.uint16, 5), (np.float32, 10)):
        volume = np.arange(2 * 3 * 4, dtype=dtype).reshape(2, 3, 4) * 3
        m = np.diag([0.3, 0.4, 2.0, 1.0])
        m[:3, 3] = [-5, 7, 9]
        raw = encode(Message("IMAGE", "V", ImageContent.from_array(volume, m)), 2)
        assert raw[58 + 12 + 3] == code  # S, after the 12-byte v2 ext header, V and T
        back = _decode(raw).content
        assert back.array.dtype == dtype
        np.testing.assert_array_equal(back.array, volume)
        np.testing.assert_allclose(back.ijk_to_ras, m, atol=1e-6)


def test_lps_big_endian_image_from_another_sender_is_converted():
    pixels = np.array([[1, 2], [3, 258]], dtype=">u2")
    header = struct.pack(
        ">HBBBB3H12f3H3H",
        1,
        1,
        5,
        1,
        2,
        2,
        2,
        1,
        1,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        1,
        10.5,
        20.5,
        30,
        0,
        0,
        0,
        2,
        2,
        1,
    )
    body = header + pixels.tobytes()
    decoded = _decode(_header(1, "IMAGE", "Img", 0, body) + body).content
    np.testing.assert_array_equal(decoded.array, pixels.astype(np.uint16))
    # LPS first voxel (10, 20, 30) is RAS (-10, -20, 30); axes flip likewise.
    np.testing.assert_allclose(decoded.ijk_to_ras[:3, 3], [-10, -20, 30])
    np.testing.assert_allclose(np.diag(decoded.ijk_to_ras)[:3], [-1, -1, 1])


def test_string_point_polydata_and_query_bytes():
    raw = encode(Message("STRING", "Cmd", StringContent("héllo", 106)), 1)
    assert raw[58:] == struct.pack(">HH", 106, 6) + "héllo".encode()
    assert _decode(raw).content.text == "héllo"

    point = Point("Tip", "Group", (255, 0, 0, 255), (1.5, -2.0, 3.25), 2.0, "Owner")
    raw = encode(Message("POINT", "Pts", PointContent([point, Point(name="B")])), 1)
    first = raw[58 : 58 + 136]
    assert first == (
        b"Tip".ljust(64, b"\0")
        + b"Group".ljust(32, b"\0")
        + bytes([255, 0, 0, 255])
        + struct.pack(">4f", 1.5, -2.0, 3.25, 2.0)
        + b"Owner".ljust(20, b"\0")
    )
    decoded = _decode(raw).content.points
    assert decoded[0] == point and decoded[1].name == "B"

    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    raw = encode(Message("POLYDATA", "Tumor", PolyDataContent(points, polygons=[[0, 1, 2]])), 1)
    expected = (
        struct.pack(">10I", 3, 0, 0, 0, 0, 1, 16, 0, 0, 0)
        + points.astype(">f4").tobytes()
        + struct.pack(">4I", 3, 0, 1, 2)
    )
    assert raw[58:] == expected
    assert _decode(raw).content.polygons == [[0, 1, 2]]

    raw = encode(Message("GET_STATUS", "", RawContent()), 2)
    assert len(raw) == 58 + 14  # ext header + an empty metadata index, as the C++ library


def test_long_device_name_is_cut_and_kept_in_v2_metadata():
    name = "StylusTipToReferenceLong"
    raw = encode(Message("TRANSFORM", name, TransformContent(np.eye(4))), 2)
    assert raw[14:34] == name[:20].encode()
    assert _decode(raw).device_name == name


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], "bad CRC"),
        (lambda b: b[:14] + "Sondé".encode("latin-1").ljust(20, b"\0") + b[34:], None),
    ],
)
def test_bad_messages_raise_protocol_errors(mutate, reason):
    raw = mutate(EX1)
    header = decode_header(raw[:58], 1 << 20)
    with pytest.raises(ProtocolError) as info:
        decode_body(header, bytearray(raw[58:]))
    assert not info.value.fatal
    assert info.value.reason == (reason or "non-ASCII device name")


def test_header_checks_are_fatal_and_refuse_huge_bodies():
    huge = EX1[:42] + struct.pack(">Q", 5 << 30) + EX1[50:58]
    with pytest.raises(ProtocolError) as info:
        decode_header(huge, 64 << 20)
    assert info.value.fatal and info.value.reason == "message too large"
    with pytest.raises(ProtocolError):
        decode_header(b"\x00\x07" + EX1[2:58], 1 << 20)
    with pytest.raises(ProtocolError):
        decode_header(EX1[:2] + b"\xff" * 12 + EX1[14:58], 1 << 20)


def test_image_whose_dimensions_disagree_with_its_body_is_refused():
    raw = bytearray(_ex3())
    struct.pack_into(">H", raw, 58 + 6, 4)  # claim 4 columns (size and sub-volume size),
    struct.pack_into(">H", raw, 58 + 66, 4)  # but the body has 3
    body = bytes(raw[58:])
    raw[50:58] = struct.pack(">Q", crc64_bitwise(body))
    with pytest.raises(ProtocolError, match="disagree"):
        _decode(bytes(raw))


def test_malformed_metadata_is_refused():
    golden = bytearray(_ex2())
    golden[58 + 12 + 48 + 2 : 58 + 12 + 48 + 4] = struct.pack(">H", 0x00FF)  # key size 255
    body = bytes(golden[58:])
    golden[50:58] = struct.pack(">Q", crc64_bitwise(body))
    with pytest.raises(ProtocolError, match="metadata"):
        _decode(bytes(golden))


def _roundtrip(data: bytes) -> Message:
    header = decode_header(data[:58], 1 << 20)
    return decode_body(header, bytearray(data[58:]))


def test_signalling_nan_from_a_peer_decodes_without_a_warning():
    """Found by ``usnav soak igtl``: a float32 signalling NaN (0x7F800001) in a TRANSFORM or
    POLYDATA made numpy's float32 → float64 cast warn; under ``-W error`` (and pytest) the
    reader thread died on it. It is decoded as NaN (a TRANSFORM then counts as INVALID)."""
    snan = struct.pack(">I", 0x7F800001)
    body = snan * 12
    data = struct.pack(">H12s20sQQQ", 1, b"TRANSFORM", b"T", 0, 48, crc64_bitwise(body)) + body
    matrix = _roundtrip(data).content.matrix
    assert np.isnan(matrix[:3, :4]).all()
    poly = struct.pack(">10I", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0) + snan * 3
    data = struct.pack(">H12s20sQQQ", 1, b"POLYDATA", b"P", 0, len(poly), crc64_bitwise(poly))
    assert np.isnan(_roundtrip(data + poly).content.points).all()


def test_a_matrix_beyond_float32_is_sent_as_infinity_without_a_warning():
    m = np.eye(4)
    m[0, 3] = 1e300
    sent = _roundtrip(encode(Message("TRANSFORM", "T", TransformContent(m)), 1))
    assert sent.content.matrix[0, 3] == np.inf
