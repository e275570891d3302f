"""Slicer re-export over a real OpenIGTLink connection on loopback."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from waiting import repeat_until, wait_until

from usnav.frames import TrackedFrame
from usnav.igtl import IgtlClient
from usnav.margins import MarginEstimator
from usnav.margins.phantom import make_phantom
from usnav.protocol.display import LIVE, STALE, UNCERTAIN, DisplayState
from usnav.publish.slicer import SlicerExporter

LIVE_STATE = DisplayState(LIVE)


class _Collector:
    def __init__(self) -> None:
        self.messages: list = []
        self.lock = threading.Lock()

    def __call__(self, message) -> None:
        with self.lock:
            self.messages.append(message)

    def found(self, predicate) -> list:
        with self.lock:
            return [m for m in self.messages if predicate(m)]

    def wait(self, predicate, timeout_s: float = 10.0) -> list:
        if not wait_until(lambda: self.found(predicate), timeout_s):
            raise AssertionError("message not received")
        return self.found(predicate)


@contextlib.contextmanager
def _exporter_and_client(collector: _Collector) -> Iterator[SlicerExporter]:
    """A started exporter on a free loopback port and one OpenIGTLink client connected to
    it, whose messages go to ``collector``."""
    with SlicerExporter(port=0) as exporter:
        client = IgtlClient("127.0.0.1", exporter.port, on_message=collector).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            yield exporter
        finally:
            client.stop()


def _live_bundle_received(
    exporter: SlicerExporter, collector: _Collector, image: np.ndarray, margins
) -> None:
    """Publish a LIVE bundle until the client has one in header v2 (its hello may still be on
    its way: until then the server speaks v1, without metadata, as PLUS does)."""
    assert repeat_until(
        lambda: exporter.publish(
            TrackedFrame(image), np.eye(4), np.eye(4), margins, DisplayState(LIVE)
        ),
        lambda: collector.found(lambda m: m.device_name == "ReferenceToMri" and m.version == 2),
        10,
        every_s=0.1,
    )


@pytest.fixture(scope="module")
def case_and_margins():
    case = make_phantom(cyst=True, seed=4)
    margins = MarginEstimator(case.label).estimate(case.image, case.image_to_mri, None)
    return case, margins


def test_slicer_receives_frame_overlay_and_transforms(case_and_margins) -> None:
    case, margins = case_and_margins
    image_to_reference = np.diag([0.15, 0.15, 1.0, 1.0])
    image_to_reference[:3, 3] = [10.0, -20.0, 5.0]
    reference_to_mri = np.linalg.solve(image_to_reference.T, case.image_to_mri.T).T
    np.testing.assert_allclose(reference_to_mri @ image_to_reference, case.image_to_mri)
    collector = _Collector()
    with SlicerExporter(port=0) as exporter:
        # nobody yet (LIVE: a frame without a state counts as UNCERTAIN, which would hold)
        nobody = exporter.publish(TrackedFrame(case.image), image_to_reference, display=LIVE_STATE)
        assert nobody == 0
        client = IgtlClient("127.0.0.1", exporter.port, on_message=collector).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            frame = TrackedFrame(case.image, frame_number=12, t_device=1.7e9)
            # the client's v2 hello may still be on its way (until then the server speaks v1,
            # without metadata, as PLUS does): resend until a v2 bundle has arrived
            assert repeat_until(
                lambda: exporter.publish(
                    frame, image_to_reference, reference_to_mri, margins, DisplayState(LIVE)
                ),
                lambda: collector.found(
                    lambda m: m.device_name == "ReferenceToMri" and m.version == 2
                ),
                10,
                every_s=0.1,
            )
            image = collector.wait(lambda m: m.device_name == "Image_Reference")[-1]
            overlay = collector.wait(lambda m: m.device_name == "Tumor_Reference")[-1]
            i2r = collector.wait(lambda m: m.device_name == "ImageToReference")[-1]
            r2m = collector.wait(lambda m: m.device_name == "ReferenceToMri")[-1]
            # the same display-state rule as every usnav display: not LIVE → INVALID
            doubt = DisplayState(UNCERTAIN, "navigation registration, not yet checked")
            exporter.publish(frame, image_to_reference, reference_to_mri, margins, doubt)
            invalid = collector.wait(
                lambda m: (
                    m.device_name == "ReferenceToMri"
                    and m.metadata.get("TransformStatus") == "INVALID"
                )
            )[-1]
            said = collector.wait(
                lambda m: m.device_name == "usnav_status" and "UNCERTAIN" in str(m.content)
            )
            uncertain = collector.wait(lambda m: m.device_name == "TumorUncertain_Reference")[-1]
            cleared = collector.wait(
                lambda m: m.device_name == "Tumor_Reference" and not m.content.array.any()
            )[-1]
        finally:
            client.stop()
    # session 43: Slicer draws a label map alike whatever its metadata say, so an UNCERTAIN
    # overlay goes on its own node, and the LIVE node is blanked (it had drawn the tumor)
    np.testing.assert_array_equal(uncertain.content.array, margins.label_image)
    assert uncertain.metadata.get("DisplayState") == UNCERTAIN
    assert cleared.metadata.get("TumorInView") == "0"
    last_live = [m for m in collector.messages if m.device_name == "Tumor_Reference"][-1]
    assert not last_live.content.array.any()
    assert image.type == "IMAGE" and overlay.type == "IMAGE"
    np.testing.assert_array_equal(image.content.array, case.image)
    np.testing.assert_allclose(image.content.ijk_to_ras, image_to_reference, atol=1e-5)
    np.testing.assert_array_equal(overlay.content.array, margins.label_image)
    assert set(np.unique(overlay.content.array)) == {0, 1, 2}
    np.testing.assert_allclose(overlay.content.ijk_to_ras, image_to_reference, atol=1e-5)
    assert overlay.metadata.get("TumorInView") == "1"
    assert image.metadata.get("FrameNumber") == "12"
    assert image.timestamp == pytest.approx(1.7e9)
    np.testing.assert_allclose(i2r.content.matrix, image_to_reference, atol=1e-5)
    np.testing.assert_allclose(r2m.content.matrix, reference_to_mri, atol=1e-4)
    assert r2m.metadata.get("TransformStatus") == "OK"
    assert overlay.metadata.get("DisplayState") == LIVE
    assert invalid.metadata.get("DisplayState") == UNCERTAIN and said


def test_overlay_clears_when_no_tumor_in_view(case_and_margins) -> None:
    case, _ = case_and_margins
    away = case.image_to_mri.copy()
    away[:3, 3] += 60.0
    margins = MarginEstimator(case.label, warm_up=False).estimate(case.image, away, None)
    assert not margins.in_view
    collector = _Collector()
    with _exporter_and_client(collector) as exporter:
        assert repeat_until(
            lambda: exporter.publish(
                TrackedFrame(case.image), np.eye(4), None, margins, DisplayState(LIVE)
            ),
            lambda: collector.found(lambda m: True),
            10,
            every_s=0.1,
        )
        overlay = collector.wait(lambda m: m.device_name == "Tumor_Reference")[-1]
    assert not overlay.content.array.any()
    assert overlay.metadata.get("TumorInView") in ("0", None)  # v1 clients get no metadata


def test_stale_clears_the_overlay_and_invalidates_both_transforms(case_and_margins) -> None:
    """After a LIVE bundle (``ReferenceToMri`` OK), a stale period: the last ``ReferenceToMri``
    a client holds must turn INVALID too (it stayed OK through STALE), and the overlay says
    STALE in its ``DisplayState``."""
    case, margins = case_and_margins
    collector = _Collector()
    live = DisplayState(LIVE, "")
    with SlicerExporter(port=0) as exporter:
        client = IgtlClient("127.0.0.1", exporter.port, on_message=collector).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            assert repeat_until(
                lambda: exporter.publish(
                    TrackedFrame(case.image), np.eye(4), np.eye(4), margins, live
                ),
                lambda: collector.found(lambda m: m.version == 2),
                10,
                every_s=0.1,
            )
            ok = collector.wait(lambda m: m.device_name == "ReferenceToMri" and m.version == 2)[-1]
            assert ok.metadata.get("TransformStatus") == "OK"
            assert exporter.mark_stale("probe no-signal") > 0
            assert exporter.mark_stale("probe no-signal") == 0  # once per stale period
            text = collector.wait(
                lambda m: m.device_name == "usnav_status" and "STALE" in m.content.text
            )[-1]
            invalid = collector.wait(
                lambda m: (
                    m.device_name == "ImageToReference"
                    and m.metadata.get("TransformStatus") == "INVALID"
                )
            )[-1]
            blank = collector.wait(
                lambda m: m.device_name == "Tumor_Reference" and m.metadata.get("Stale") == "1"
            )[-1]
        finally:
            client.stop()
    assert text.content.text == "STALE: probe no-signal"
    assert invalid.metadata.get("TransformValid") == "0"
    assert not blank.content.array.any()
    assert blank.metadata.get("DisplayState") == "STALE"
    assert blank.metadata.get("DisplayReason") == "probe no-signal"
    registration = [
        m for m in collector.messages if m.device_name == "ReferenceToMri" and m.version == 2
    ][-1]
    assert registration.metadata.get("TransformStatus") == "INVALID"
    assert registration.metadata.get("DisplayState") == "STALE"


def test_a_v1_client_never_receives_an_invalid_registration(case_and_margins) -> None:
    """A header-v1 client cannot be told ``TransformStatus``: an UNCERTAIN ``ReferenceToMri``
    reached it looking like any valid transform. It now gets only valid transforms (PLUS's
    SendValidTransformsOnly); a v2 client still gets the INVALID one with its status."""
    case, margins = case_and_margins
    v1, v2 = _Collector(), _Collector()
    uncertain = DisplayState(UNCERTAIN, "registration uncertain")
    with SlicerExporter(port=0) as exporter:
        old = IgtlClient("127.0.0.1", exporter.port, on_message=v1, header_version=1).start()
        new = IgtlClient("127.0.0.1", exporter.port, on_message=v2).start()
        try:
            assert exporter.server.wait_for_clients(2, timeout_s=10)

            def publish(display: DisplayState, number: int) -> int:
                frame = TrackedFrame(case.image, frame_number=number)
                return exporter.publish(frame, np.eye(4), np.eye(4), margins, display)

            assert repeat_until(
                lambda: publish(uncertain, 1),
                lambda: (
                    v2.found(lambda m: m.version == 2 and m.device_name == "ReferenceToMri")
                    and v1.found(lambda m: m.device_name == "usnav_status")
                ),  # a bundle's last
                10,
                every_s=0.1,
            )
            uncertain_ones = v1.found(lambda m: m.device_name == "ReferenceToMri")
            # LIVE once it has held (the display's hold: 0.5 s after the last UNCERTAIN)
            assert repeat_until(
                lambda: publish(DisplayState(LIVE, ""), 2),
                lambda: v1.found(lambda m: m.device_name == "ReferenceToMri"),
                10,
                every_s=0.1,
            )
            live = v1.found(lambda m: m.device_name == "ReferenceToMri")
        finally:
            old.stop()
            new.stop()
    assert uncertain_ones == [] and live  # the v1 client got it only once it was LIVE
    assert v2.found(
        lambda m: (
            m.device_name == "ReferenceToMri" and m.metadata.get("TransformStatus") == "INVALID"
        )
    )


def test_a_late_v1_client_is_told_the_state(case_and_margins) -> None:
    """``usnav_status`` went out only when the state's words changed: a v1 client (which reads
    the state from it alone) connecting during a steady UNCERTAIN never learned it, and a
    reason whose numbers moved sent it on every frame. Now: to a client that joins, on a
    change of the state word, and every STATUS_RESEND_S."""
    case, margins = case_and_margins
    first, late = _Collector(), _Collector()
    steady = DisplayState(UNCERTAIN, "registration uncertain")
    with SlicerExporter(port=0) as exporter:
        a = IgtlClient("127.0.0.1", exporter.port, on_message=first).start()
        b = None
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)

            def publish(number: int, reason: str = "registration uncertain") -> int:
                frame = TrackedFrame(case.image, frame_number=number)
                display = DisplayState(UNCERTAIN, reason)
                return exporter.publish(frame, np.eye(4), np.eye(4), margins, display)

            assert repeat_until(
                lambda: publish(1),
                lambda: first.found(lambda m: m.device_name == "usnav_status"),
                10,
                every_s=0.1,
            )
            told = len(first.found(lambda m: m.device_name == "usnav_status"))
            for k in range(5):  # the reason's wording moves, the state does not
                publish(2 + k, f"the tumor lies {0.1 * k:.1f} mm from the plane")
            b = IgtlClient("127.0.0.1", exporter.port, on_message=late, header_version=1).start()
            assert exporter.server.wait_for_clients(2, timeout_s=10)
            assert repeat_until(
                lambda: publish(10),
                lambda: late.found(lambda m: m.device_name == "usnav_status"),
                10,
                every_s=0.1,
            )
        finally:
            a.stop()
            if b is not None:
                b.stop()
    said = late.found(lambda m: m.device_name == "usnav_status")[0]
    assert said.content.text == f"UNCERTAIN: {steady.reason}"
    # five frames within a second, one state: no status for each new wording
    assert len(first.found(lambda m: m.device_name == "usnav_status")) <= told + 1


def test_stale_margins_go_out_with_an_invalid_pose_and_no_tumor(case_and_margins) -> None:
    """A backlog flushed after a stall is published STALE (its frames are seconds old): the
    bundles carried ``ImageToReference`` OK and the tumor in view."""
    case, margins = case_and_margins
    assert margins.in_view and margins.label_image.any()
    collector = _Collector()
    stale = DisplayState(STALE, "frame 4.3 s old (it arrived 4.3 s late by the device's clock)")
    with SlicerExporter(port=0) as exporter:
        client = IgtlClient("127.0.0.1", exporter.port, on_message=collector).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            bundle = (TrackedFrame(case.image), np.eye(4), np.eye(4), margins, stale)
            assert repeat_until(  # until the client speaks v2 (with the status metadata)
                lambda: exporter.publish(*bundle),
                lambda: collector.found(lambda m: m.version == 2),
                10,
                every_s=0.1,
            )
            collector.wait(lambda m: m.version == 2 and m.device_name == "ImageToReference")
        finally:
            client.stop()
    pose = collector.found(lambda m: m.version == 2 and m.device_name == "ImageToReference")[-1]
    assert pose.metadata.get("TransformStatus") == "INVALID"
    overlay = [m for m in collector.messages if m.device_name == "Tumor_Reference"][-1]
    assert not overlay.content.array.any()
    assert overlay.metadata.get("TumorInView") == "0" and overlay.metadata.get("Stale") == "1"


def test_an_uncertain_overlay_is_never_drawn_on_the_live_node(case_and_margins) -> None:
    """Session 43: Slicer drew an UNCERTAIN tumor exactly like a LIVE one (only metadata and
    the INVALID ``ReferenceToMri`` differed). UNCERTAIN bundles draw on
    ``TumorUncertain_Reference`` only; a stale period blanks both nodes."""
    case, margins = case_and_margins
    collector = _Collector()
    uncertain = DisplayState(UNCERTAIN, "registration uncertain")
    with _exporter_and_client(collector) as exporter:
        assert repeat_until(
            lambda: exporter.publish(
                TrackedFrame(case.image), np.eye(4), np.eye(4), margins, uncertain
            ),
            lambda: collector.found(lambda m: m.device_name == "TumorUncertain_Reference"),
            10,
            every_s=0.1,
        )
        exporter.stale = False
        assert exporter.mark_stale("probe no-signal") > 0
        collector.wait(lambda m: m.device_name == "usnav_status" and "STALE" in m.content.text)
    live_node = [m for m in collector.messages if m.device_name == "Tumor_Reference"]
    assert all(not m.content.array.any() for m in live_node)
    drawn = [m for m in collector.messages if m.device_name == "TumorUncertain_Reference"]
    assert drawn[0].content.array.any()
    assert not drawn[-1].content.array.any()  # blanked by the stale bundle
    assert drawn[-1].metadata.get("DisplayState") in (STALE, None)  # (None: a v1 bundle)


def test_a_v1_get_transform_gets_no_invalid_registration(case_and_margins) -> None:
    """A v1 client asking GET_TRANSFORM got the UNCERTAIN ``ReferenceToMri`` (the broadcast
    filter was skipped for requests), looking valid."""
    from usnav.igtl import Message
    from usnav.igtl.codec import RawContent

    case, margins = case_and_margins
    v1 = _Collector()
    uncertain = DisplayState(UNCERTAIN, "registration uncertain")
    with SlicerExporter(port=0) as exporter:
        client = IgtlClient("127.0.0.1", exporter.port, on_message=v1, header_version=1).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            frame = TrackedFrame(case.image)
            exporter.publish(frame, np.eye(4), np.eye(4), margins, uncertain)
            # (12 characters at most: OpenIGTLink's GET_TRANSFORM is sent as GET_TRANSFOR)
            assert client.wait_connected(10)
            ask = Message("GET_TRANSFOR", "ReferenceToMri", RawContent())
            assert repeat_until(  # a send before the link is up is dropped: ask again
                lambda: client.send(ask),
                lambda: v1.found(
                    lambda m: m.type == "STATUS" and m.device_name == "ReferenceToMri"
                ),
                10,
                every_s=0.5,
            )
            answer = v1.found(lambda m: m.type == "STATUS" and m.device_name == "ReferenceToMri")
        finally:
            client.stop()
    assert answer  # "not found" rather than the INVALID registration looking valid
    assert not v1.found(lambda m: m.type == "TRANSFORM" and m.device_name == "ReferenceToMri")


def test_closing_tells_clients_the_overlay_is_no_longer_live(case_and_margins) -> None:
    """``usnav run`` stopped (Ctrl-C, SIGTERM) while LIVE: Slicer keeps the nodes it holds
    after the connection ends, so the exporter says STALE before it closes. Until session 43
    it closed at once and Slicer kept ``ReferenceToMri`` OK and the tumor drawn LIVE."""
    case, margins = case_and_margins
    collector = _Collector()
    with _exporter_and_client(collector) as exporter:
        _live_bundle_received(exporter, collector, case.image, margins)
        exporter.close("usnav run stopped")
        said = collector.wait(
            lambda m: m.device_name == "usnav_status" and m.content.text.startswith("STALE")
        )[-1]
    assert said.content.text == "STALE: usnav run stopped"
    registration = [m for m in collector.messages if m.device_name == "ReferenceToMri"][-1]
    assert registration.metadata.get("TransformStatus") == "INVALID"
    overlay = [m for m in collector.messages if m.device_name == "Tumor_Reference"][-1]
    assert overlay.metadata.get("DisplayState") == STALE and not overlay.content.array.any()


def test_a_client_is_told_the_state_before_any_frame() -> None:
    """The probe never streamed: no frame, so no node to invalidate — but a client that
    joins must still get ``usnav_status`` (protocol.md: at once to a client that joins, at
    least every second). Until session 43 it got nothing but keep-alives."""
    collector = _Collector()
    with _exporter_and_client(collector) as exporter:
        assert repeat_until(
            lambda: exporter.mark_stale("probe connecting"),
            lambda: collector.found(lambda m: m.device_name == "usnav_status"),
            10,
            every_s=0.1,
        )
    said = collector.found(lambda m: m.device_name == "usnav_status")
    assert said[0].content.text == "STALE: probe connecting"
    assert not collector.found(lambda m: m.type in ("IMAGE", "TRANSFORM"))


def test_a_reason_that_is_not_ascii_is_still_said(case_and_margins) -> None:
    """The wrong image size's reason reads "image 820 × 616 px …": ``usnav_status`` went as
    US-ASCII, its encoding raised, and the stale bundle never left (the status loop logged
    "status publishing failed" four times a second; session 43)."""
    case, margins = case_and_margins
    reason = "image 820 × 616 px is not the size the calibration was made for — not placed"
    collector = _Collector()
    with _exporter_and_client(collector) as exporter:
        _live_bundle_received(exporter, collector, case.image, margins)
        assert exporter.mark_stale(reason) > 0
        said = collector.wait(
            lambda m: m.device_name == "usnav_status" and m.content.text.startswith("STALE")
        )[-1]
    assert said.content.text == f"STALE: {reason}"
    registration = [m for m in collector.messages if m.device_name == "ReferenceToMri"][-1]
    assert registration.metadata.get("DisplayReason") == reason


def _skimmed(case, margins, uncertain: DisplayState, hold_s: float) -> _Collector:
    """What a client receives from an exporter holding for ``hold_s``: UNCERTAIN, then 20
    frames alternately LIVE and UNCERTAIN; with a short hold, then LIVE until drawn LIVE."""
    collector = _Collector()

    def publish(number: int, display: DisplayState) -> int:
        frame = TrackedFrame(case.image, frame_number=number)
        return exporter.publish(frame, np.eye(4), np.eye(4), margins, display)

    def drawn(device: str) -> list:
        return collector.found(lambda m: m.device_name == device and m.content.array.any())

    with SlicerExporter(port=0, state_hold_s=hold_s) as exporter:
        client = IgtlClient("127.0.0.1", exporter.port, on_message=collector).start()
        try:
            assert exporter.server.wait_for_clients(1, timeout_s=10)
            assert repeat_until(  # until the client speaks v2 (with the metadata)
                lambda: publish(0, uncertain),
                lambda: [m for m in drawn("TumorUncertain_Reference") if m.version == 2],
                10,
                every_s=0.1,
            )
            for k in range(1, 21):
                assert publish(k, DisplayState(LIVE) if k % 2 else uncertain)
            if hold_s < 1.0:
                assert repeat_until(
                    lambda: publish(99, DisplayState(LIVE)),
                    lambda: drawn("Tumor_Reference"),
                    10,
                    every_s=0.05,
                )
            else:
                collector.wait(lambda m: m.metadata.get("FrameNumber") == "20")
        finally:
            client.stop()
    return collector


def test_a_skimming_plane_does_not_move_the_overlay_between_its_nodes(case_and_margins) -> None:
    """An imaging plane skimming the tumor: margins alternately UNCERTAIN and LIVE at frame
    rate. The overlay moved between ``TumorUncertain_Reference`` and ``Tumor_Reference`` and
    ``ReferenceToMri`` between INVALID and OK with every frame. Held as every usnav display
    holds it (session 44): after an UNCERTAIN frame nothing is drawn LIVE until LIVE held
    (here 10 s, so that no stall of a loaded machine can end the hold within the test), then
    it is (a short hold, waited for)."""
    case, margins = case_and_margins
    uncertain = DisplayState(UNCERTAIN, "the tumor lies 0.6 mm from this plane")

    def live_ones(collector: _Collector) -> tuple[list, list]:
        drawn = collector.found(
            lambda m: m.device_name == "Tumor_Reference" and m.content.array.any()
        )
        ok = collector.found(
            lambda m: (
                m.device_name == "ReferenceToMri"
                and m.version == 2
                and m.metadata.get("TransformStatus") == "OK"
            )
        )
        return drawn, ok

    held = _skimmed(case, margins, uncertain, 10.0)
    assert live_ones(held) == ([], [])
    overlays = held.found(lambda m: m.device_name == "TumorUncertain_Reference")
    assert {m.metadata.get("FrameNumber") for m in overlays} >= {"1", "19"}
    assert all(m.metadata.get("DisplayState") == UNCERTAIN for m in overlays if m.version == 2)
    assert overlays[-1].metadata.get("DisplayReason") == uncertain.reason
    held_live = [m for m in overlays if m.metadata.get("FrameNumber") == "19"]
    assert held_live[-1].metadata.get("DisplayReason") == f"{uncertain.reason} (in the last 10 s)"
    drawn, ok = live_ones(_skimmed(case, margins, uncertain, 0.2))
    assert drawn and ok  # LIVE once it held
