"""Each topic's encoder and decoder agree: what the publisher encodes is what a client reads."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.protocol import messages as m
from usnav.protocol import wire
from usnav.protocol.display import LIVE, DisplayState


def _roundtrip(topic: str, payload: m.Payload) -> m.Message:
    header, buffers = payload
    parts = [bytes(part) for part in wire.encode(topic, header, buffers)]
    return m.parse(wire.decode(parts), t_arrived=header["t_published"] + 0.001)


def _header(topic: str) -> dict:
    return m.encode_header(
        topic,
        stream=7,
        frame_number=42,
        t_device=12.5,
        t_received=1.7e9,
        image_to_mri=np.diag([0.2, 0.2, 1.0, 1.0]),
        age_s=1.5,
        quality=0.8,
        uncertainty_mm=1.2,
        registration_checked=True,
        display=DisplayState(LIVE),
        live_max_uncertainty_mm=2.0,
    )


def test_common_header_roundtrip():
    msg = _roundtrip("status", m.encode_status(_header("status"), {"state": "streaming"}))
    h = msg.header
    assert (h.topic, h.stream, h.frame_number, h.t_device, h.t_received) == (
        "status",
        7,
        42,
        12.5,
        1.7e9,
    )
    np.testing.assert_array_equal(h.image_to_mri, np.diag([0.2, 0.2, 1.0, 1.0]))
    assert (h.age_s, h.quality, h.uncertainty_mm, h.registration_checked) == (1.5, 0.8, 1.2, True)
    assert (h.display_state, h.display_reason, h.live_max_uncertainty_mm) == (LIVE, "", 2.0)
    assert h.version == wire.VERSION == 2
    assert msg.status == {"state": "streaming"}


def test_an_unknown_image_to_mri_is_nil_never_nan():
    """A frame that cannot be placed has no ImageToMri: nil on the wire (it went out as a NaN
    matrix, which a display resliced through and crashed, session 36), and a NaN one from
    another publisher reads as unknown."""
    header = _header("status")
    header.update(m.encode_header("status", stream=7, image_to_mri=np.full((4, 4), np.nan)))
    assert header["ImageToMri"] is None
    msg = _roundtrip("status", m.encode_status(header, {}))
    assert msg.header.image_to_mri is None
    header["ImageToMri"] = np.diag([0.2, np.nan, 1.0, 1.0]).tolist()  # a foreign publisher's
    msg = _roundtrip("status", m.encode_status(header, {}))
    assert msg.header.image_to_mri is None and msg.header.raw["ImageToMri"][1][1] != 0.2


def test_margin_roundtrip_keeps_every_field():
    rng = np.random.default_rng(0)
    n = 9
    contour = m.Contour(
        "solid",
        1,
        False,
        rng.random((n, 2)).astype(np.float32),
        rng.random((n, 2)).astype(np.float32),
        rng.random(n).astype(np.float32),
        rng.random(n).astype(np.float32),
        rng.random((n, 3)).astype(np.float32),
        np.array([1, 0] * 4 + [1], dtype=bool),
    )
    label = (rng.random((6, 5)) > 0.5).astype(np.uint8)
    payload = m.encode_margin(
        _header("margin"),
        in_view=True,
        reason="",
        image_shape=(6, 5),
        spacing_mm=(0.2, 0.3),
        contours=[contour],
        label_image=label,
        extent={"lateral_mm": 1.0, "axial_mm": 2.0, "max_diameter_mm": 2.5, "area_mm2": 3.0},
        distance_to_top_mm=4.0,
        stylus={
            "signed_distance_mm": -1.0,
            "nearest_mri_mm": np.zeros(3),
            "tip_px": np.ones(2),
            "out_of_plane_mm": 0.5,
        },
        polarity={"solid": "hyperechoic"},
        supported_fraction=0.75,
        median_abs_disagreement_mm=0.4,
        registration_sequence=3,
        compute_s=0.002,
        stale=True,
        stale_reason="probe no-signal",
    )
    msg = _roundtrip("margin", payload)
    assert isinstance(msg, m.MarginMessage)
    assert msg.in_view and msg.image_shape == (6, 5) and msg.spacing_mm == pytest.approx((0.2, 0.3))
    assert msg.header.stale and msg.header.stale_reason == "probe no-signal"
    (got,) = msg.contours
    for name in (
        "predicted_px",
        "observed_px",
        "disagreement_mm",
        "confidence",
        "predicted_mri_mm",
    ):
        np.testing.assert_array_equal(getattr(got, name), getattr(contour, name))
    np.testing.assert_array_equal(got.faces_tissue, contour.faces_tissue)
    np.testing.assert_array_equal(msg.label_image, label)
    assert msg.extent["max_diameter_mm"] == 2.5 and msg.stylus["signed_distance_mm"] == -1.0
    assert msg.polarity == {"solid": "hyperechoic"} and msg.registration_sequence == 3
    assert msg.supported_fraction == 0.75 and msg.median_abs_disagreement_mm == pytest.approx(0.4)
    assert msg.compute_s == pytest.approx(0.002) and msg.distance_to_top_mm == 4.0


def test_frame_and_registration_roundtrip():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    frame = _roundtrip(
        "frame",
        m.encode_frame(_header("frame"), image=image, spacing_mm=(0.2, 0.2), image_ok=False),
    )
    np.testing.assert_array_equal(frame.image, image)
    assert frame.spacing_mm == (0.2, 0.2) and not frame.image_ok
    matrix = np.eye(4)
    matrix[:3, 3] = (1, 2, 3)
    reg = _roundtrip(
        "registration",
        m.encode_registration(
            _header("registration"),
            reference_to_mri=matrix,
            similarity=float("nan"),
            uncertainty_mm=1.25,
            t_computed=1.7e9,
            estimate_sequence=5,
            source="image",
            reason="better",
            in_use=True,
            resent=True,
        ),
    )
    np.testing.assert_array_equal(reg.reference_to_mri, matrix)
    assert reg.similarity is None and reg.uncertainty_mm == 1.25
    assert (reg.estimate_sequence, reg.source, reg.reason) == (5, "image", "better")
    assert reg.in_use and reg.resent


def test_a_version_1_publisher_is_read_but_never_live():
    header = _header("registration")
    header.update(version=1, accepted=True)
    for key in ("display_state", "display_reason", "registration_checked"):
        del header[key]
    reg = _roundtrip(
        "registration",
        m.encode_registration(
            header,
            reference_to_mri=np.eye(4),
            similarity=0.3,
            uncertainty_mm=0.5,
            t_computed=1.7e9,
            estimate_sequence=1,
            source="image",
            reason="accepted",
            in_use=True,
        ),
    )
    assert reg.header.version == 1 and reg.header.display_state == "UNCERTAIN"
    assert "protocol 1" in reg.header.display_reason


def test_a_repeat_names_its_image_first_frame_and_an_older_publisher_reads_as_new():
    """Session 43: a frame grabber faster than the scanner repeats images; the margin and frame
    headers say which frame the image first came with (additive keys, version 2 kept)."""
    image = np.zeros((3, 4), np.uint8)
    header = m.encode_image_arrival(_header("frame"), repeat_of=40, image_age_s=0.067)
    frame = _roundtrip("frame", m.encode_frame(header, image=image, spacing_mm=(0.2, 0.2)))
    assert (frame.header.repeat_of, frame.header.image_age_s) == (40, 0.067)
    assert frame.header.version == 2
    new = m.encode_image_arrival(_header("frame"), repeat_of=None, image_age_s=0.0)
    assert (
        _roundtrip("frame", m.encode_frame(new, image=image, spacing_mm=None)).header.repeat_of
        is None
    )
    older = _header("frame")  # a publisher before session 43: no such keys
    assert "repeat_of" not in older
    h = _roundtrip("frame", m.encode_frame(older, image=image, spacing_mm=None)).header
    assert (h.repeat_of, h.image_age_s) == (None, None)
    wrong = {**header, "repeat_of": "40"}
    with pytest.raises(wire.HeaderError, match="'repeat_of' is not an int"):
        _roundtrip("frame", m.encode_frame(wrong, image=image, spacing_mm=None))
