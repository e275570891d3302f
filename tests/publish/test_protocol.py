"""Encoding and validated decoding of protocol messages (no sockets)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from usnav.client import parse
from usnav.protocol import wire as p


def _header(topic: str = "status", **extra) -> dict:
    base = {
        "schema": p.SCHEMA,
        "version": p.VERSION,
        "topic": topic,
        "seq": 3,
        "stream": 42,
        "frame_number": 9,
        "t_device": 1.0,
        "t_received": 2.0,
        "t_published": 3.0,
        "ImageToMri": None,
        "age_s": None,
        "quality": None,
        "uncertainty_mm": None,
        "registration_checked": False,
        "display_state": "UNCERTAIN",
        "display_reason": "no registration",
        "live_max_uncertainty_mm": 2.0,
    }
    base.update(extra)
    return base


def _bytes(parts) -> list[bytes]:
    return [bytes(x) for x in parts]


@settings(max_examples=40, deadline=None)
@given(
    arrays=st.lists(
        hnp.arrays(
            dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
        ),
        max_size=4,
    )
)
def test_buffers_round_trip(arrays: list[np.ndarray]) -> None:
    buffers = [(f"b{k}", a.astype(a.dtype.newbyteorder("<"))) for k, a in enumerate(arrays)]
    raw = p.decode(_bytes(p.encode("frame", _header("frame"), buffers)))
    assert raw.topic == "frame" and raw.header["seq"] == 3
    assert list(raw.arrays) == [name for name, _ in buffers]
    for name, array in buffers:
        np.testing.assert_array_equal(raw.arrays[name], array)
        assert raw.arrays[name].dtype == array.dtype


def test_header_is_plain_msgpack_with_the_common_fields() -> None:
    parts = p.encode("status", _header(status={"fps": np.float32(29.5), "drops": np.int64(2)}), [])
    assert parts[0] == b"status"
    header = msgpack.unpackb(bytes(parts[1]), raw=False)
    for key in p.COMMON_FIELDS:
        assert key in header
    # numpy values went over as plain numbers
    assert header["status"] == {"fps": 29.5, "drops": 2}


def test_unknown_version_and_schema() -> None:
    parts = _bytes(p.encode("status", _header(version=p.VERSION + 1), []))
    with pytest.raises(p.VersionError, match=f"version {p.VERSION + 1}"):
        p.decode(parts, "tcp://x")
    parts = _bytes(p.encode("status", _header(schema="other"), []))
    with pytest.raises(p.VersionError, match="schema"):
        p.decode(parts)


def test_truncated_messages() -> None:
    full = _bytes(p.encode("frame", _header("frame"), [("image", np.zeros((4, 5), np.uint8))]))
    with pytest.raises(p.TruncatedMessageError, match="1 buffer"):
        p.decode(full[:2])
    with pytest.raises(p.TruncatedMessageError):
        p.decode(full[:1])
    with pytest.raises(p.TruncatedMessageError):
        p.decode([*full, b"extra"])


def test_wrong_buffer_sizes() -> None:
    full = _bytes(p.encode("frame", _header("frame"), [("image", np.zeros((4, 5), np.uint8))]))
    with pytest.raises(p.BufferSizeError, match="19 bytes"):
        p.decode([full[0], full[1], full[2][:-1]])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h: h.pop("seq"), "seq"),
        (lambda h: h.update(seq="7"), "seq"),
        (lambda h: h.update(buffers=[{"name": "x", "dtype": "|O", "shape": [1]}]), "dtype"),
        (lambda h: h.update(buffers=[{"name": "x", "dtype": "<f4", "shape": [-1]}]), "shape"),
        (lambda h: h.update(topic="margin"), "topic"),
    ],
)
def test_malformed_headers(mutate, match: str) -> None:
    header = _header()
    header["buffers"] = []
    mutate(header)
    parts = [b"status", msgpack.packb(header)]
    if header.get("buffers"):
        parts.append(b"\0" * 8)
    with pytest.raises(p.ProtocolError, match=match):
        p.decode(parts)


def test_garbage_header_and_non_map() -> None:
    with pytest.raises(p.HeaderError, match="not msgpack"):
        p.decode([b"status", b"\xc1\xc1\xc1"])
    with pytest.raises(p.HeaderError, match="not a map"):
        p.decode([b"status", msgpack.packb([1, 2, 3])])


def test_object_dtypes_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="wire dtype"):
        p.encode("frame", _header("frame"), [("x", np.array([object()], dtype=object))])


def test_margin_contour_shapes_are_checked() -> None:
    header = _header(
        "margin",
        in_view=True,
        image_shape=[4, 4],
        spacing_mm=[0.2, 0.2],
        contours=[{"structure": "solid", "label": 1, "hole": False, "n": 3}],
    )
    buffers = [
        ("c0.predicted_px", np.zeros((3, 2), np.float32)),
        ("c0.observed_px", np.zeros((3, 2), np.float32)),
        ("c0.disagreement_mm", np.zeros(3, np.float32)),
        ("c0.confidence", np.zeros(3, np.float32)),
        ("c0.predicted_mri_mm", np.zeros((3, 3), np.float32)),
        ("c0.faces_tissue", np.ones(3, np.uint8)),
    ]
    message = parse(p.decode(_bytes(p.encode("margin", header, buffers))))
    assert message.contours[0].faces_tissue.dtype == bool
    buffers[3] = ("c0.confidence", np.zeros(4, np.float32))
    with pytest.raises(p.BufferSizeError, match="confidence"):
        parse(p.decode(_bytes(p.encode("margin", header, buffers))))
    with pytest.raises(p.HeaderError, match="predicted_px"):
        parse(p.decode(_bytes(p.encode("margin", header, buffers[1:]))))
