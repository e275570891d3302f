"""ZeroMQ PUB publisher of margins, frames, registration estimates and status.

A PUB socket never blocks: past its high-water mark it drops messages for that subscriber,
so a slow or dead display cannot stall the frame path (clients see the drop as a gap in the
per-topic ``seq``). The high-water mark is set before ``bind``; linger is 0 so closing never
waits for a subscriber.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from usnav.errors import InputError
from usnav.protocol import messages as m
from usnav.protocol import wire as p
from usnav.protocol.curve import (
    interface_name,
    is_ipv6_endpoint,
    is_loopback_endpoint,
    loopback_endpoint_like,
    secure_server_socket,
)
from usnav.protocol.display import UNCERTAIN, DisplayRules, DisplayState, publisher_state
from usnav.protocol.messages import finite_or_none
from usnav.protocol.wire import DEFAULT_ADDRESS

if TYPE_CHECKING:
    from usnav.frames import TrackedFrame
    from usnav.margins.estimator import FrameMargins
    from usnav.registration.estimate import RegistrationEstimate

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_ADDRESS", "Publisher"]


#: Largest message a peer may send the publisher, bytes: a subscription (``\x01`` + a topic
#: prefix); a larger one closes that peer's connection (ZeroMQ's MAXMSGSIZE)
MAX_SUBSCRIPTION_BYTES = 1024


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
    display_rules
        The thresholds of the ``display_state`` every message carries
        (:class:`~usnav.protocol.display.DisplayRules`; default: LIVE needs a registration
        checked on the ultrasound with a stated uncertainty ≤ 2 mm).
    curve_secret_key, curve_authorized_dir
        ZeroMQ CURVE: the publisher's ``*.key_secret`` file and the folder of authorised client
        public keys (default: ``authorized/`` beside the key). Required to bind anything but
        loopback; see ``usnav keys``.
    standing_doubt
        Why nothing this publisher sends may be LIVE, for the whole run ("": nothing): every
        message is at most UNCERTAIN with this reason when no other applies (``usnav run``: a
        calibration that ``usnav calibrate`` flagged).

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
        display_rules: DisplayRules | None = None,
        curve_secret_key: str | Path | None = None,
        curve_authorized_dir: str | Path | None = None,
        standing_doubt: str = "",
    ):
        self.address = address
        self.display_rules = display_rules or DisplayRules()
        #: why nothing this publisher sends may be LIVE, for the whole run ("" if nothing):
        #: e.g. a calibration ``usnav calibrate`` flagged
        self.standing_doubt = standing_doubt
        #: why the registration in use is in doubt right now beyond what the estimate says
        #: ("" if nothing): set by the pipeline at each frame (the patient reference moved
        #: against the tracker since the registration was checked,
        #: :mod:`usnav.pipeline.reference_motion`); every topic's messages carry it
        self.registration_doubt = ""
        if (
            curve_secret_key is None
            and address.startswith("tcp://")
            and not is_loopback_endpoint(address)
        ):
            local = loopback_endpoint_like(address)
            keys = (
                "create keys with 'usnav keys --out KEYDIR' and pass --curve-key "
                "KEYDIR/server.key_secret"
            )
            interface = interface_name(address)
            if interface is not None:
                raise InputError(
                    address,
                    f"'{interface}' names a network interface, not an address: only a "
                    "loopback address or localhost counts as this machine only (an "
                    "interface's addresses are the machine's configuration, even lo's)",
                    f"for this machine only write {local}; beyond it, {keys}",
                )
            raise InputError(
                address,
                "publishing beyond loopback needs encryption and client authentication",
                f"{keys} (or bind {local})",
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
        # what a PUB socket reads is subscriptions (a topic name each): ZeroMQ allocates a
        # frame of the size a peer declares, so without a bound one peer's "subscription" of
        # gigabytes grew the pipeline's memory without end; a larger one drops that peer
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
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
        if is_ipv6_endpoint(address):
            self._socket.setsockopt(zmq.IPV6, 1)
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
        stale_reason: str = "",
        doubt: str = "",
    ) -> dict[str, Any]:
        est = estimate if estimate is not None else self._last_estimate
        display = self.display_of(est, now, stale_reason=stale_reason, doubt=doubt)
        return m.encode_header(
            topic,
            stream=self.stream,
            frame_number=frame_number,
            t_device=t_device,
            t_received=t_received,
            image_to_mri=image_to_mri,
            # the navigation system's registration was never estimated on the images
            age_s=est.age_s(now) if _checked(est) else None,
            quality=est.quality if _checked(est) else None,
            uncertainty_mm=est.uncertainty_mm if est is not None else None,
            registration_checked=_checked(est),
            display=display,
            live_max_uncertainty_mm=self.display_rules.registration_limit_mm,
        )

    def display_of(
        self,
        estimate: RegistrationEstimate | None,
        now: float | None = None,
        *,
        stale_reason: str = "",
        doubt: str = "",
    ) -> DisplayState:
        """The ``display_state`` of data computed with ``estimate`` (see
        :func:`usnav.protocol.display.publisher_state`); the :attr:`registration_doubt`, and
        the message's own ``doubt``, else the publisher's :attr:`standing_doubt`, keep it from
        LIVE."""
        doubt = "; ".join(d for d in (self.registration_doubt, doubt or self.standing_doubt) if d)
        if estimate is None:
            if stale_reason:
                return publisher_state(
                    checked=False,
                    uncertainty_mm=None,
                    checked_age_s=None,
                    rules=self.display_rules,
                    stale_reason=stale_reason,
                )
            return DisplayState(UNCERTAIN, "no registration yet")
        return publisher_state(
            checked=_checked(estimate),
            uncertainty_mm=estimate.uncertainty_mm,
            checked_age_s=estimate.age_s(now),
            rules=self.display_rules,
            stale_reason=stale_reason,
            doubt=doubt,
            unconfirmed=estimate.unconfirmed,
            contradicted=estimate.contradicted,
        )

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
        doubt: str = "",
        repeat_of: int | None = None,
        image_age_s: float | None = 0.0,
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
        doubt
            Why these margins' content is in doubt although the registration is good (e.g.
            "no tumor in view" while the tumor lies within the registration's uncertainty of
            the plane): they go out UNCERTAIN.
        repeat_of, image_age_s
            The frame number of the earlier frame whose image this frame repeats (None: the
            image is new; the margins are then drawn at that frame's pose), and how long
            before this frame the image first came, s by the device's clock.

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
            stale_reason=(stale_reason or "marked stale") if stale else "",
            doubt=doubt,
        )
        m.encode_image_arrival(header, repeat_of=repeat_of, image_age_s=image_age_s)
        if estimate is None and self._last_estimate is None:
            # the registration fields the margins were computed with
            header["age_s"] = finite_or_none(margins.registration_age_s)
            header["quality"] = finite_or_none(margins.registration_quality)
        rows, cols = (frame.rows, frame.cols) if frame is not None else (0, 0)
        if margins.label_image is not None:
            rows, cols = margins.label_image.shape
        extent, stylus = margins.extent, margins.stylus
        header, buffers = m.encode_margin(
            header,
            stale=stale,
            stale_reason=stale_reason,
            in_view=margins.in_view,
            reason=margins.reason,
            image_shape=(rows, cols),
            spacing_mm=margins.spacing_mm,
            contours=margins.contours,
            label_image=margins.label_image if self.send_label_image else None,
            extent=None if extent is None else _field_values(extent),
            distance_to_top_mm=margins.distance_to_top_mm,
            stylus=None if stylus is None else _field_values(stylus),
            polarity=dict(margins.polarity),
            supported_fraction=margins.supported_fraction,
            median_abs_disagreement_mm=margins.median_abs_disagreement_mm,
            registration_sequence=margins.registration_sequence,
            compute_s=margins.compute_s,
        )
        return self._send(p.TOPIC_MARGIN, header, buffers)

    def publish_frame(
        self,
        frame: TrackedFrame,
        image_to_mri: np.ndarray | None = None,
        estimate: RegistrationEstimate | None = None,
        *,
        stale_reason: str = "",
        repeat_of: int | None = None,
        image_age_s: float | None = 0.0,
    ) -> bool:
        """Publish the ultrasound image on topic ``frame`` (for displays without another feed).

        Parameters
        ----------
        frame
            The frame; its image goes as buffer ``image`` (uint8 or uint16; other pixel
            types stretched to uint16: :func:`usnav.protocol.messages.display_pixels`).
        image_to_mri
            Its pixel → MRI matrix, if known (also gives the pixel size).
        estimate
            The registration behind ``image_to_mri``.
        repeat_of, image_age_s
            As :meth:`publish_margins`'s.
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
            stale_reason=stale_reason,
        )
        m.encode_image_arrival(header, repeat_of=repeat_of, image_age_s=image_age_s)
        spacing = None
        if image_to_mri is not None:
            matrix = np.asarray(image_to_mri, dtype=np.float64)
            spacing = (float(np.linalg.norm(matrix[:3, 0])), float(np.linalg.norm(matrix[:3, 1])))
        header, buffers = m.encode_frame(
            header,
            image=frame.image,
            spacing_mm=spacing,
            orientation=frame.orientation,
            image_ok=frame.image_ok,
        )
        return self._send(p.TOPIC_FRAME, header, buffers)

    def publish_registration(
        self,
        estimate: RegistrationEstimate,
        *,
        in_use: bool | None = None,
        resent: bool = False,
        stale_reason: str = "",
    ) -> bool:
        """Publish a registration estimate on topic ``registration``.

        Parameters
        ----------
        estimate
            The estimate.
        in_use
            Whether margins are now computed with it (default: ``estimate.accepted``). One not
            in use goes out UNCERTAIN, for information only.
        resent
            A periodic re-send of the estimate in use, so displays that joined late learn it.
        stale_reason
            Non-empty when the pipeline's data may not show the present.
        """
        in_use = bool(estimate.accepted) if in_use is None else bool(in_use)
        if in_use:
            self._last_estimate = estimate
        now = time.time()
        header = self._header(
            p.TOPIC_REGISTRATION, estimate=estimate, now=now, stale_reason=stale_reason
        )
        if not in_use:
            header["display_state"] = UNCERTAIN
            header["display_reason"] = f"not in use: {estimate.reason}"
        header, buffers = m.encode_registration(
            header,
            reference_to_mri=estimate.reference_to_mri,
            similarity=estimate.similarity,
            uncertainty_mm=estimate.uncertainty_mm,
            t_computed=estimate.t_computed,
            estimate_sequence=estimate.sequence,
            source=estimate.source,
            reason=estimate.reason,
            in_use=in_use,
            resent=resent,
        )
        return self._send(p.TOPIC_REGISTRATION, header, buffers)

    def publish_status(self, status: dict[str, Any], *, stale_reason: str = "") -> bool:
        """Publish pipeline status on topic ``status`` (connection state, fps, latency, drops).

        Values must be msgpack-able; numpy values are converted and anything else is sent as
        its text. Publishing at ≥ 1 Hz lets displays tell a quiet pipeline from a lost one.
        """
        header = self._header(p.TOPIC_STATUS, now=time.time(), stale_reason=stale_reason)
        header, buffers = m.encode_status(header, status)
        return self._send(p.TOPIC_STATUS, header, buffers)

    @property
    def estimate_in_use(self) -> RegistrationEstimate | None:
        """The registration estimate the newest messages were computed with (None: none yet)."""
        return self._last_estimate

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


def _field_values(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields by name, the values themselves (``dataclasses.asdict``
    deep-copies every value; the encoder only reads them)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def _checked(estimate: RegistrationEstimate | None) -> bool:
    """Whether a registration was estimated or confirmed on the images, or came from points —
    anything but the navigation system's unchecked initial registration (``source="init"``)."""
    return estimate is not None and estimate.checked
