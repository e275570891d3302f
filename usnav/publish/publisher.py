"""ZeroMQ PUB publisher of margins, frames, registration estimates and status.

A PUB socket never blocks: past its high-water mark it drops messages for that subscriber,
so a slow or dead display cannot stall the frame path (clients see the drop as a gap in the
per-topic ``seq``). The high-water mark is set before ``bind``; linger is 0 so closing never
waits for a subscriber.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from usnav.defaults import DISPLAY_ENDPOINT
from usnav.errors import InputError
from usnav.publish import protocol as p
from usnav.publish.curve import is_loopback_endpoint, secure_server_socket

if TYPE_CHECKING:
    from usnav.frames import TrackedFrame
    from usnav.margins.estimator import FrameMargins
    from usnav.registration.estimate import RegistrationEstimate

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = DISPLAY_ENDPOINT


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Publisher:
    """Publishes usnav messages on a ZeroMQ PUB socket.

    Parameters
    ----------
    address
        Where to bind, e.g. ``tcp://127.0.0.1:5556`` (loopback by default; bind another
        interface only on purpose, e.g. ``tcp://0.0.0.0:5556``).
    hwm
        Send high-water mark (messages queued per subscriber before dropping).
    send_label_image
        Include the tumor label image (uint8, rows × cols) in margin messages, so a display can
        fill the tumor exactly; contours alone are always sent.
    context
        A ZeroMQ context to use (default: the process's shared instance).
    curve_secret_key, curve_authorized_dir
        ZeroMQ CURVE: the publisher's ``*.key_secret`` file and the folder of authorised client
        public keys (default: ``authorized/`` beside the key). Required to bind anything but
        loopback; see ``usnav keys``.

    Raises
    ------
    InputError
        The address is malformed or already in use.

    Notes
    -----
    Thread-safe: one lock serialises sends (a ZeroMQ socket must not be used by two threads
    at once). Sends never block.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        hwm: int = 20,
        *,
        send_label_image: bool = True,
        context: zmq.Context | None = None,
        curve_secret_key: str | Path | None = None,
        curve_authorized_dir: str | Path | None = None,
    ):
        self.address = address
        if (
            curve_secret_key is None
            and address.startswith("tcp://")
            and not is_loopback_endpoint(address)
        ):
            raise InputError(
                address,
                "publishing beyond loopback needs encryption and client authentication",
                "create keys with 'usnav keys --out KEYDIR' and pass --curve-key "
                "KEYDIR/server.key_secret (or bind tcp://127.0.0.1)",
            )
        self.send_label_image = send_label_image
        # CURVE's authenticator binds a fixed inproc address in its context: a private context
        # per secured publisher, so two of them (or a restart before the old one is reaped)
        # can coexist in one process
        self._own_context = (
            zmq.Context() if context is None and curve_secret_key is not None else None
        )
        self._context = context or self._own_context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, int(hwm))  # before bind: it applies per pipe
        self._socket.setsockopt(zmq.SNDTIMEO, 0)
        self._authenticator = None
        if curve_secret_key is not None:
            try:
                self._authenticator = secure_server_socket(
                    self._socket, curve_secret_key, curve_authorized_dir
                )
            except Exception as exc:
                self._socket.close(0)
                if self._own_context is not None:
                    self._own_context.term()
                if isinstance(exc, zmq.ZMQError):
                    raise InputError(
                        address,
                        f"cannot start CURVE authentication: {exc}",
                        "another secured publisher shares this ZeroMQ context: give each its own",
                    ) from exc
                raise
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            if self._authenticator is not None:
                self._authenticator.stop()
            if self._own_context is not None:
                self._own_context.term()
            hint = (
                "another usnav (or another program) is publishing there: stop it or choose "
                "another address"
                if exc.errno == zmq.EADDRINUSE
                else "use a ZeroMQ endpoint like tcp://127.0.0.1:5556"
            )
            raise InputError(address, f"cannot bind the publisher: {exc}", hint) from exc
        #: the address actually bound (resolves a ``tcp://127.0.0.1:*`` wildcard port)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stream = secrets.randbits(63)
        self._seq = dict.fromkeys(p.TOPICS, 0)
        self._lock = threading.Lock()
        self._closed = False
        #: messages handed to ZeroMQ per topic, and sends that failed (counted, never raised)
        self.sent = dict.fromkeys(p.TOPICS, 0)
        self.failed = 0
        self._last_estimate: RegistrationEstimate | None = None

    # -- common ----------------------------------------------------------------------------

    def _header(
        self,
        topic: str,
        *,
        frame_number: int = -1,
        t_device: float | None = None,
        t_received: float | None = None,
        image_to_mri: np.ndarray | None = None,
        estimate: RegistrationEstimate | None = None,
        now: float,
    ) -> dict[str, Any]:
        est = estimate if estimate is not None else self._last_estimate
        # margins without an estimate use their own registration fields (see publish_margins)
        return {
            "schema": p.SCHEMA,
            "version": p.VERSION,
            "topic": topic,
            "seq": self._seq[topic],
            "stream": self.stream,
            "frame_number": int(frame_number),
            "t_device": _finite_or_none(t_device),
            "t_received": _finite_or_none(t_received),
            "t_published": now,
            "ImageToMri": p.matrix_to_wire(image_to_mri),
            "age_s": _finite_or_none(est.age_s(now)) if est is not None else None,
            "quality": _finite_or_none(est.quality) if est is not None else None,
            "accepted": bool(est.accepted) if est is not None else False,
        }

    def _send(self, topic: str, header: dict[str, Any], buffers: list) -> bool:
        with self._lock:
            if self._closed:
                return False
            header["seq"] = self._seq[topic]
            header["t_published"] = time.time()
            try:
                frames = p.encode(topic, header, buffers)
                # copied: the caller may reuse its arrays as soon as this returns
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                # PUB does not raise Again (it drops); kept for socket types that might
                self.failed += 1
                return False
            except (zmq.ZMQError, ValueError, TypeError) as exc:
                self.failed += 1
                log.warning("publish %s failed: %s", topic, exc)
                return False
            finally:
                self._seq[topic] += 1
            self.sent[topic] += 1
            return True

    # -- topics ----------------------------------------------------------------------------

    def publish_margins(
        self,
        frame: TrackedFrame | None,
        margins: FrameMargins,
        estimate: RegistrationEstimate | None = None,
        *,
        stale: bool = False,
        stale_reason: str = "",
    ) -> bool:
        """Publish one frame's margins on topic ``margin``.

        Parameters
        ----------
        frame
            The frame they were computed on (for timestamps); None to use the margins' own
            frame number and no timestamps.
        margins
            The estimate from :class:`~usnav.margins.MarginEstimator`.
        estimate
            The registration estimate behind them (its age is taken at publish time).
        stale, stale_reason
            The pipeline knows these margins may not show the present (probe link not
            streaming, tracking lost): a display must show them as stale.

        Returns
        -------
        bool
            Whether the message was handed to ZeroMQ (False only on an internal error, which
            is counted in :attr:`failed`; a message dropped at a subscriber's HWM is not seen
            here, but as a gap by that subscriber).
        """
        if estimate is not None:
            self._last_estimate = estimate
        now = time.time()
        header = self._header(
            p.TOPIC_MARGIN,
            frame_number=frame.frame_number if frame is not None else margins.frame_number,
            t_device=frame.t_device if frame is not None else None,
            t_received=frame.t_received if frame is not None else None,
            image_to_mri=margins.image_to_mri,
            estimate=estimate,
            now=now,
        )
        if estimate is None:
            # the registration fields the margins were computed with
            header["age_s"] = _finite_or_none(margins.registration_age_s)
            header["quality"] = _finite_or_none(margins.registration_quality)
            header["accepted"] = bool(margins.registration_accepted)
        rows, cols = (frame.rows, frame.cols) if frame is not None else (0, 0)
        if margins.label_image is not None:
            rows, cols = margins.label_image.shape
        extent = margins.extent
        stylus = margins.stylus
        header.update(
            {
                "stale": bool(stale),
                "stale_reason": str(stale_reason),
                "in_view": bool(margins.in_view),
                "reason": margins.reason,
                "image_shape": [int(rows), int(cols)],
                "spacing_mm": [float(margins.spacing_mm[0]), float(margins.spacing_mm[1])],
                "contours": [
                    {
                        "structure": c.structure,
                        "label": int(c.label),
                        "hole": bool(c.hole),
                        "n": int(c.n_points),
                    }
                    for c in margins.contours
                ],
                "extent": None
                if extent is None
                else {
                    "lateral_mm": extent.lateral_mm,
                    "axial_mm": extent.axial_mm,
                    "max_diameter_mm": extent.max_diameter_mm,
                    "area_mm2": extent.area_mm2,
                },
                "distance_to_top_mm": _finite_or_none(margins.distance_to_top_mm),
                "stylus": None
                if stylus is None
                else {
                    "signed_distance_mm": stylus.signed_distance_mm,
                    "nearest_mri_mm": [float(v) for v in stylus.nearest_mri_mm],
                    "tip_px": [float(v) for v in stylus.tip_px],
                    "out_of_plane_mm": stylus.out_of_plane_mm,
                },
                "polarity": dict(margins.polarity),
                "supported_fraction": float(margins.supported_fraction),
                "median_abs_disagreement_mm": _finite_or_none(margins.median_abs_disagreement_mm),
                "registration_sequence": int(margins.registration_sequence),
                "compute_s": float(margins.compute_s),
            }
        )
        buffers: list[tuple[str, np.ndarray]] = []
        for k, c in enumerate(margins.contours):
            buffers += [
                (f"c{k}.predicted_px", p.wire_array(c.predicted_px, "<f4")),
                (f"c{k}.observed_px", p.wire_array(c.observed_px, "<f4")),
                (f"c{k}.disagreement_mm", p.wire_array(c.disagreement_mm, "<f4")),
                (f"c{k}.confidence", p.wire_array(c.confidence, "<f4")),
                (f"c{k}.predicted_mri_mm", p.wire_array(c.predicted_mri_mm, "<f4")),
                (f"c{k}.faces_tissue", p.wire_array(c.faces_tissue, "|u1")),
            ]
        if self.send_label_image and margins.label_image is not None:
            buffers.append(("label_image", p.wire_array(margins.label_image, "|u1")))
        return self._send(p.TOPIC_MARGIN, header, buffers)

    def publish_frame(
        self,
        frame: TrackedFrame,
        image_to_mri: np.ndarray | None = None,
        estimate: RegistrationEstimate | None = None,
    ) -> bool:
        """Publish the ultrasound image on topic ``frame`` (for displays without another feed).

        Parameters
        ----------
        frame
            The frame; its image goes as buffer ``image`` (uint8 or uint16).
        image_to_mri
            Its pixel → MRI matrix, if known (also gives the pixel size).
        estimate
            The registration behind ``image_to_mri``.
        """
        if estimate is not None:
            self._last_estimate = estimate
        header = self._header(
            p.TOPIC_FRAME,
            frame_number=frame.frame_number,
            t_device=frame.t_device,
            t_received=frame.t_received,
            image_to_mri=image_to_mri,
            estimate=estimate,
            now=time.time(),
        )
        image = np.asarray(frame.image)
        if image.dtype not in (np.uint8, np.uint16):
            image = np.clip(image, 0, 255).astype(np.uint8)
        spacing = None
        if image_to_mri is not None:
            m = np.asarray(image_to_mri, dtype=np.float64)
            spacing = [float(np.linalg.norm(m[:3, 0])), float(np.linalg.norm(m[:3, 1]))]
        header.update(
            {
                "image_shape": [int(s) for s in image.shape[:2]],
                "spacing_mm": spacing,
                "orientation": frame.orientation,
                "image_ok": bool(frame.image_ok),
            }
        )
        wire = p.wire_array(image, "|u1" if image.dtype == np.uint8 else "<u2")
        return self._send(p.TOPIC_FRAME, header, [("image", wire)])

    def publish_registration(self, estimate: RegistrationEstimate) -> bool:
        """Publish a registration estimate (accepted or rejected) on topic ``registration``."""
        if estimate.accepted:
            self._last_estimate = estimate
        now = time.time()
        header = self._header(p.TOPIC_REGISTRATION, estimate=estimate, now=now)
        header.update(
            {
                "ReferenceToMri": p.matrix_to_wire(estimate.reference_to_mri),
                "similarity": _finite_or_none(estimate.similarity),
                "uncertainty_mm": _finite_or_none(estimate.uncertainty_mm),
                "t_computed": float(estimate.t_computed),
                "estimate_sequence": int(estimate.sequence),
                "source": str(estimate.source),
                "reason": str(estimate.reason),
            }
        )
        return self._send(p.TOPIC_REGISTRATION, header, [])

    def publish_status(self, status: dict[str, Any]) -> bool:
        """Publish pipeline status on topic ``status`` (connection state, fps, latency, drops).

        Values must be msgpack-able; numpy values are converted and anything else is sent as
        its text. Publishing at ≥ 1 Hz lets displays tell a quiet pipeline from a lost one.
        """
        header = self._header(p.TOPIC_STATUS, now=time.time())
        header["status"] = {str(k): v for k, v in dict(status).items()}
        return self._send(p.TOPIC_STATUS, header, [])

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket (immediately: linger 0). Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._socket.close(0)
                if self._authenticator is not None:
                    self._authenticator.stop()
                if self._own_context is not None:
                    self._own_context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
