"""The usnav message schema: per topic, its typed message, its encoder and its decoder side by side.

An encoder turns plain fields into ``(header, buffers)`` for :func:`usnav.protocol.wire.encode`;
the decoder beside it turns a validated :class:`~usnav.protocol.wire.RawMessage` back into the
typed message. Field names and buffer layouts that both sides use are written once, in the
tables of this module (``_CONTOUR_BUFFERS``...), so publisher and client cannot drift apart.

Nothing here imports a usnav stage: the publisher converts its own objects (margins,
registration estimates) into these plain fields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from usnav.protocol.display import LIVE, STALE, UNCERTAIN, DisplayState
from usnav.protocol.wire import (
    SCHEMA,
    TOPIC_FRAME,
    TOPIC_MARGIN,
    TOPIC_REGISTRATION,
    TOPIC_STATUS,
    VERSION,
    BufferSizeError,
    HeaderError,
    RawMessage,
    TopicError,
    matrix_to_wire,
    wire_array,
)

#: What an encoder returns: the topic's header map and its named buffers, in order.
Payload = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (msgpack has no NaN
    convention every reader honours)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _float(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else (float("nan"))
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def finite_matrix_or_none(matrix: np.ndarray | None) -> np.ndarray | None:
    """``matrix``, or None when it is None or holds a NaN or infinite value: an unknown
    transform is nil on the wire, never NaN (the pipeline marks a frame it cannot place with a
    NaN ``ImageToMri``; a display that resliced the MRI through it crashed, session 36)."""
    if matrix is None:
        return None
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix if bool(np.all(np.isfinite(matrix))) else None


def _matrix(value: Any, peer: str, where: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HeaderError(peer, f"{where} is not a 4×4 matrix") from exc
    if m.shape != (4, 4):
        raise HeaderError(peer, f"{where} has shape {m.shape}, expected 4×4")
    return m


_NO_REGISTRATION = DisplayState(UNCERTAIN, "no registration")

# -- common header -------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """Fields every message carries.

    Attributes
    ----------
    topic, seq, stream
        Topic, its per-publisher sequence number, and the publisher instance's id (a new id
        means the publisher restarted: ``seq`` starts again without a gap).
    frame_number
        The ultrasound frame the message is about (-1 if none).
    t_device, t_received, t_published
        Device time of the frame, host time it was received, host time it was published (s,
        epoch; None when not applicable).
    t_arrived
        Host time this client took it off the socket (s, epoch).
    image_to_mri
        4×4 pixel (col, row, 0, 1) → MRI RAS mm, or None.
    display_state, display_reason
        The publisher's verdict for this message — ``LIVE``, ``UNCERTAIN``, ``STALE`` or
        ``WAITING`` — and why (see :mod:`usnav.protocol.display`). A display shows the state
        of :func:`usnav.protocol.display.display_state`, which can only make it worse.
    uncertainty_mm
        The registration's stated 95 % error bound at the tumor, mm (None: unknown).
    registration_checked
        Whether the registration was estimated or confirmed on the ultrasound (False: the
        navigation system's unchecked registration).
    age_s
        Seconds since the registration was last estimated or confirmed, at publish time.
    quality
        The registration worker's 0..1 score, for information (it decides nothing).
    live_max_uncertainty_mm
        The publisher's LIVE threshold on ``uncertainty_mm``.
    version
        The protocol version of the publisher (1: no display_state; never LIVE).
    gap
        Messages of this topic missed just before this one (dropped at a high-water mark or
        never received).
    stale, stale_reason
        The publisher marked the message as not showing the present (probe link not
        streaming, tracking lost); a display must show it as stale.
    repeat_of, image_age_s
        Topics ``margin`` and ``frame``: the frame number of the earlier frame whose image this
        frame repeats (a frame grabber capturing faster than the scanner updates; the margins
        and ``ImageToMri`` are that frame's pose, the image's own), None when the image is new
        (or the publisher predates session 43); how long before this frame, s by the device's
        clock, the image first came (0 when new; None: unknown).
    raw
        The whole decoded header map (for fields this client does not model).
    """

    topic: str
    seq: int
    stream: int
    frame_number: int
    t_device: float | None
    t_received: float | None
    t_published: float
    t_arrived: float
    image_to_mri: np.ndarray | None
    age_s: float | None
    quality: float | None
    gap: int
    raw: dict[str, Any] = field(repr=False)
    stale: bool = False
    stale_reason: str = ""
    display_state: str = UNCERTAIN
    display_reason: str = ""
    uncertainty_mm: float | None = None
    registration_checked: bool = False
    live_max_uncertainty_mm: float | None = None
    version: int = VERSION
    repeat_of: int | None = None
    image_age_s: float | None = None

    @property
    def display(self) -> DisplayState:
        """The publisher's display state as a :class:`~usnav.protocol.display.DisplayState`."""
        return DisplayState(self.display_state, self.display_reason)

    @property
    def transport_latency_s(self) -> float:
        """Publish → arrival at this client, s."""
        return self.t_arrived - self.t_published

    @property
    def latency_s(self) -> float | None:
        """Frame received by usnav → arrival at this client (pipeline + transport), s."""
        return None if self.t_received is None else self.t_arrived - self.t_received


def encode_header(
    topic: str,
    *,
    stream: int,
    frame_number: int = -1,
    t_device: float | None = None,
    t_received: float | None = None,
    image_to_mri: np.ndarray | None = None,
    age_s: float | None = None,
    quality: float | None = None,
    uncertainty_mm: float | None = None,
    registration_checked: bool = False,
    display: DisplayState = _NO_REGISTRATION,
    live_max_uncertainty_mm: float | None = None,
) -> dict[str, Any]:
    """The common header fields of one message (``seq`` and ``t_published`` are set when it is
    sent, ``buffers`` when it is framed). ``display`` comes from
    :func:`usnav.protocol.display.publisher_state`."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "topic": topic,
        "seq": 0,
        "stream": int(stream),
        "frame_number": int(frame_number),
        "t_device": finite_or_none(t_device),
        "t_received": finite_or_none(t_received),
        "t_published": time.time(),
        "ImageToMri": matrix_to_wire(finite_matrix_or_none(image_to_mri)),
        "age_s": finite_or_none(age_s),
        "quality": finite_or_none(quality),
        "uncertainty_mm": finite_or_none(uncertainty_mm),
        "registration_checked": bool(registration_checked),
        "display_state": display.state,
        "display_reason": display.reason,
        "live_max_uncertainty_mm": finite_or_none(live_max_uncertainty_mm),
    }


def encode_image_arrival(
    header: dict[str, Any], *, repeat_of: int | None, image_age_s: float | None
) -> dict[str, Any]:
    """Add to a ``margin`` or ``frame`` header which frame its image first came with
    (``repeat_of``: None when the image is new in this frame) and how long before it (s, the
    device's clock). Updated in place and returned."""
    header["repeat_of"] = None if repeat_of is None else int(repeat_of)
    header["image_age_s"] = finite_or_none(image_age_s)
    return header


def _repeat_of(h: dict[str, Any], peer: str) -> int | None:
    value = h.get("repeat_of")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise HeaderError(peer, f"{h.get('topic')} #{h.get('seq')}: 'repeat_of' is not an int")
    return value


def stream_id(header: dict[str, Any], peer: str) -> int:
    """The publisher instance id of a decoded header (0 when absent)."""
    stream = header.get("stream", 0) or 0
    if not isinstance(stream, int) or isinstance(stream, bool):
        raise HeaderError(
            peer, f"{header.get('topic')} #{header.get('seq')}: 'stream' is not an int"
        )
    return stream


def decode_header(raw: RawMessage, gap: int, t_arrived: float, peer: str) -> Header:
    """The typed common fields of a decoded message (a version-1 message, which has no
    display state, is UNCERTAIN)."""
    h = raw.header
    version = int(h.get("version", VERSION))
    if version < 2:
        state = UNCERTAIN
        reason = "the publisher speaks protocol 1 (no display_state): update usnav there"
    else:
        state = str(h.get("display_state", UNCERTAIN))
        reason = str(h.get("display_reason", "") or "")
    stale = bool(h.get("stale", False))
    stale_reason = str(h.get("stale_reason", "") or "")
    if stale and state in (LIVE, UNCERTAIN):
        # "stale: show as stale" (protocol.md, topic margin): never read better than STALE,
        # whatever display_state another publisher put beside it
        state, reason = STALE, stale_reason or "the publisher marked these data stale"
    return Header(
        topic=raw.topic,
        seq=int(h["seq"]),
        stream=stream_id(h, peer),
        frame_number=int(h["frame_number"]),
        t_device=_opt_float(h.get("t_device")),
        t_received=_opt_float(h.get("t_received")),
        t_published=float(h["t_published"]),
        t_arrived=t_arrived,
        # unknown when not finite (another publisher may send NaN): never a plane to draw
        image_to_mri=finite_matrix_or_none(
            _matrix(h.get("ImageToMri"), peer, f"{raw.topic} #{h['seq']} ImageToMri")
        ),
        age_s=_opt_float(h.get("age_s")),
        quality=_opt_float(h.get("quality")),
        gap=gap,
        raw=h,
        stale=stale,
        stale_reason=stale_reason,
        display_state=state,
        display_reason=reason,
        uncertainty_mm=finite_or_none(_opt_float(h.get("uncertainty_mm"))),
        registration_checked=bool(h.get("registration_checked", False)),
        live_max_uncertainty_mm=_opt_float(h.get("live_max_uncertainty_mm")),
        version=version,
        repeat_of=_repeat_of(h, peer),
        image_age_s=finite_or_none(_opt_float(h.get("image_age_s"))),
    )


# -- topic "margin" ------------------------------------------------------------------------

#: Per-contour buffers: name → (wire dtype, trailing shape after the point count N).
_CONTOUR_BUFFERS: dict[str, tuple[str, tuple[int, ...]]] = {
    "predicted_px": ("<f4", (2,)),
    "observed_px": ("<f4", (2,)),
    "disagreement_mm": ("<f4", ()),
    "confidence": ("<f4", ()),
    "predicted_mri_mm": ("<f4", (3,)),
    "faces_tissue": ("|u1", ()),
}


class ContourLike(Protocol):
    """What the margin encoder needs of a contour (e.g. :class:`usnav.margins.MarginContour`)."""

    structure: str
    label: int
    hole: bool
    predicted_px: np.ndarray
    observed_px: np.ndarray
    disagreement_mm: np.ndarray
    confidence: np.ndarray
    predicted_mri_mm: np.ndarray
    faces_tissue: np.ndarray


@dataclass(frozen=True)
class Contour:
    """One margin contour (see :class:`usnav.margins.MarginContour`).

    Arrays: ``predicted_px``/``observed_px`` (N, 2) image pixels (x = col, y = row);
    ``disagreement_mm``, ``confidence`` (N,); ``predicted_mri_mm`` (N, 3) MRI RAS mm;
    ``faces_tissue`` (N,) bool — False along the border between solid tumor and cyst.
    """

    structure: str
    label: int
    hole: bool
    predicted_px: np.ndarray
    observed_px: np.ndarray
    disagreement_mm: np.ndarray
    confidence: np.ndarray
    predicted_mri_mm: np.ndarray
    faces_tissue: np.ndarray

    def supported(self, threshold: float = 0.5) -> np.ndarray:
        """Boolean mask of the points the ultrasound supports."""
        return self.confidence >= threshold


@dataclass(frozen=True)
class MarginMessage:
    """Topic ``margin``: one frame's tumor margins."""

    header: Header
    in_view: bool
    reason: str
    image_shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    contours: tuple[Contour, ...]
    label_image: np.ndarray | None
    extent: dict[str, float] | None
    distance_to_top_mm: float | None
    stylus: dict[str, Any] | None
    polarity: dict[str, str]
    supported_fraction: float
    median_abs_disagreement_mm: float | None
    registration_sequence: int
    compute_s: float = float("nan")


def encode_margin(
    header: dict[str, Any],
    *,
    in_view: bool,
    reason: str,
    image_shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    contours: Sequence[ContourLike],
    label_image: np.ndarray | None = None,
    extent: dict[str, float] | None = None,
    distance_to_top_mm: float | None = None,
    stylus: dict[str, Any] | None = None,
    polarity: dict[str, str] | None = None,
    supported_fraction: float = 0.0,
    median_abs_disagreement_mm: float | None = None,
    registration_sequence: int = -1,
    compute_s: float = 0.0,
    stale: bool = False,
    stale_reason: str = "",
) -> Payload:
    """Header fields and buffers of a ``margin`` message (see :class:`MarginMessage`).

    ``header`` holds the common fields (:func:`encode_header`); it is updated in place.
    ``extent`` has ``lateral_mm, axial_mm, max_diameter_mm, area_mm2``; ``stylus`` has
    ``signed_distance_mm, nearest_mri_mm [3], tip_px [2], out_of_plane_mm``.
    """
    header.update(
        {
            "stale": bool(stale),
            "stale_reason": str(stale_reason),
            "in_view": bool(in_view),
            "reason": str(reason),
            "image_shape": [int(image_shape[0]), int(image_shape[1])],
            "spacing_mm": [float(spacing_mm[0]), float(spacing_mm[1])],
            "contours": [
                {
                    "structure": str(c.structure),
                    "label": int(c.label),
                    "hole": bool(c.hole),
                    "n": len(c.predicted_px),
                }
                for c in contours
            ],
            "extent": None if extent is None else {k: float(v) for k, v in extent.items()},
            "distance_to_top_mm": finite_or_none(distance_to_top_mm),
            "stylus": None
            if stylus is None
            else {
                "signed_distance_mm": float(stylus["signed_distance_mm"]),
                "nearest_mri_mm": [float(v) for v in stylus["nearest_mri_mm"]],
                "tip_px": [float(v) for v in stylus["tip_px"]],
                "out_of_plane_mm": float(stylus["out_of_plane_mm"]),
            },
            "polarity": dict(polarity or {}),
            "supported_fraction": float(supported_fraction),
            "median_abs_disagreement_mm": finite_or_none(median_abs_disagreement_mm),
            "registration_sequence": int(registration_sequence),
            "compute_s": float(compute_s),
        }
    )
    buffers: list[tuple[str, np.ndarray]] = []
    for k, c in enumerate(contours):
        for name, (dtype, _) in _CONTOUR_BUFFERS.items():
            buffers.append((f"c{k}.{name}", wire_array(getattr(c, name), dtype)))
    if label_image is not None:
        buffers.append(("label_image", wire_array(label_image, "|u1")))
    return header, buffers


def decode_margin(raw: RawMessage, header: Header, where: str, peer: str) -> MarginMessage:
    """The typed ``margin`` message (inverse of :func:`encode_margin`)."""
    h = raw.header
    contours = []
    for k, entry in enumerate(h.get("contours", [])):
        n = int(entry["n"])
        arrays = {}
        for name, (_, trailing) in _CONTOUR_BUFFERS.items():
            expected = (n, *trailing)
            array = raw.arrays.get(f"c{k}.{name}")
            if array is None:
                raise HeaderError(peer, f"{where}: contour {k} has no buffer {name!r}")
            if array.shape != expected:
                raise BufferSizeError(
                    peer,
                    f"{where}: contour {k} {name} has shape {array.shape}, expected {expected}",
                )
            arrays[name] = array
        arrays["faces_tissue"] = arrays["faces_tissue"].astype(bool)
        contours.append(
            Contour(str(entry["structure"]), int(entry["label"]), bool(entry["hole"]), **arrays)
        )
    shape = h.get("image_shape") or [0, 0]
    label_image = raw.arrays.get("label_image")
    if label_image is not None and tuple(label_image.shape) != (int(shape[0]), int(shape[1])):
        raise BufferSizeError(
            peer, f"{where}: label_image has shape {label_image.shape}, header says {shape}"
        )
    in_view = bool(h.get("in_view", False))
    if in_view and not contours:
        raise HeaderError(peer, f"{where}: in_view with no contours")
    spacing = h.get("spacing_mm") or [float("nan"), float("nan")]
    extent, stylus = h.get("extent"), h.get("stylus")
    if extent is not None:
        if not isinstance(extent, dict):
            raise HeaderError(peer, f"{where}: 'extent' is not a map")
        extent = {str(k): _float(v) for k, v in extent.items()}
    if stylus is not None and not isinstance(stylus, dict):
        raise HeaderError(peer, f"{where}: 'stylus' is not a map")
    if stylus is not None and "signed_distance_mm" in stylus:
        stylus = {**stylus, "signed_distance_mm": _opt_float(stylus["signed_distance_mm"])}
    return MarginMessage(
        header=header,
        in_view=in_view,
        reason=str(h.get("reason", "")),
        image_shape=(int(shape[0]), int(shape[1])),
        spacing_mm=(_float(spacing[0]), _float(spacing[1])),
        contours=tuple(contours),
        label_image=label_image,
        extent=extent,
        distance_to_top_mm=_opt_float(h.get("distance_to_top_mm")),
        stylus=stylus,
        polarity=dict(h.get("polarity") or {}),
        supported_fraction=_float(h.get("supported_fraction", 0.0)),
        median_abs_disagreement_mm=_opt_float(h.get("median_abs_disagreement_mm")),
        registration_sequence=int(h.get("registration_sequence", -1)),
        compute_s=_float(h.get("compute_s")),
    )


# -- topic "frame" -------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMessage:
    """Topic ``frame``: an ultrasound image."""

    header: Header
    image: np.ndarray
    spacing_mm: tuple[float, float] | None
    orientation: str
    image_ok: bool


def display_pixels(image: np.ndarray) -> np.ndarray:
    """``image`` as the ``frame`` topic carries it: uint8 or uint16 unchanged; any other
    pixel type a device may send (int8/16/32, uint32, float32/64: an OpenIGTLink IMAGE of any
    scalar type) mapped linearly from the frame's lowest finite value to 0 and its highest to
    65535, as uint16 (non-finite pixels: 0; a constant frame: all 0).

    Until session 35 such pixels were clipped to 0-255: a float32 frame in 0..1 went out
    black, an int16 frame with negative values mostly saturated.
    """
    image = np.asarray(image)
    if image.dtype in (np.uint8, np.uint16):
        return image
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.uint16)
    low = float(values[finite].min())
    high = float(values[finite].max())
    if high <= low:
        return np.zeros(image.shape, np.uint16)
    scaled = np.where(finite, (values - low) * (65535.0 / (high - low)), 0.0)
    return np.rint(np.clip(scaled, 0.0, 65535.0)).astype(np.uint16)


def encode_frame(
    header: dict[str, Any],
    *,
    image: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    orientation: str = "MF",
    image_ok: bool = True,
) -> Payload:
    """Header fields and the ``image`` buffer of a ``frame`` message: uint8 and uint16 as
    they are, any other pixel type stretched to uint16 (:func:`display_pixels`)."""
    image = display_pixels(image)
    header.update(
        {
            "image_shape": [int(s) for s in image.shape[:2]],
            "spacing_mm": None if spacing_mm is None else [float(v) for v in spacing_mm],
            "orientation": str(orientation),
            "image_ok": bool(image_ok),
        }
    )
    wire = wire_array(image, "|u1" if image.dtype == np.uint8 else "<u2")
    return header, [("image", wire)]


def decode_frame(raw: RawMessage, header: Header, where: str, peer: str) -> FrameMessage:
    """The typed ``frame`` message (inverse of :func:`encode_frame`)."""
    h = raw.header
    image = raw.arrays.get("image")
    if image is None or image.ndim < 2:
        raise HeaderError(peer, f"{where}: no 2D buffer 'image'")
    spacing = h.get("spacing_mm")
    return FrameMessage(
        header,
        image,
        (float(spacing[0]), float(spacing[1])) if spacing else None,
        str(h.get("orientation", "MF")),
        bool(h.get("image_ok", True)),
    )


# -- topic "registration" ------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationMessage:
    """Topic ``registration``: a registration estimate, adopted or not.

    ``in_use`` says whether margins are now computed with this estimate (it replaced the
    previous one, or it is the current one re-sent for displays that joined late). It does
    **not** say the estimate is good enough to show as such: that is ``header.display_state``.
    ``resent`` marks a periodic re-send of the estimate in use (not a new estimate).
    """

    header: Header
    reference_to_mri: np.ndarray
    similarity: float | None
    uncertainty_mm: float | None
    t_computed: float
    estimate_sequence: int
    source: str
    reason: str
    in_use: bool = False
    resent: bool = False


def encode_registration(
    header: dict[str, Any],
    *,
    reference_to_mri: np.ndarray,
    similarity: float | None,
    uncertainty_mm: float | None,
    t_computed: float,
    estimate_sequence: int,
    source: str,
    reason: str,
    in_use: bool,
    resent: bool = False,
) -> Payload:
    """Header fields of a ``registration`` message (no buffers)."""
    header.update(
        {
            "ReferenceToMri": matrix_to_wire(reference_to_mri),
            "similarity": finite_or_none(similarity),
            "uncertainty_mm": finite_or_none(uncertainty_mm),
            "t_computed": float(t_computed),
            "estimate_sequence": int(estimate_sequence),
            "source": str(source),
            "reason": str(reason),
            "in_use": bool(in_use),
            "resent": bool(resent),
        }
    )
    return header, []


def decode_registration(
    raw: RawMessage, header: Header, where: str, peer: str
) -> RegistrationMessage:
    """The typed ``registration`` message (inverse of :func:`encode_registration`)."""
    h = raw.header
    matrix = _matrix(h.get("ReferenceToMri"), peer, f"{where} ReferenceToMri")
    if matrix is None:
        raise HeaderError(peer, f"{where}: ReferenceToMri missing")
    return RegistrationMessage(
        header,
        matrix,
        _opt_float(h.get("similarity")),
        _opt_float(h.get("uncertainty_mm")),
        _float(h.get("t_computed")),
        int(h.get("estimate_sequence", -1)),
        str(h.get("source", "")),
        str(h.get("reason", "")),
        # version 1 called it "accepted"
        bool(h.get("in_use", h.get("accepted", False))),
        bool(h.get("resent", False)),
    )


# -- topic "status" ------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusMessage:
    """Topic ``status``: pipeline state (connection, fps, latency, drops...)."""

    header: Header
    status: dict[str, Any]


def encode_status(header: dict[str, Any], status: dict[str, Any]) -> Payload:
    """Header of a ``status`` message: the map of plain values under key ``status``
    (numpy values become numbers, anything else its text)."""
    header["status"] = {str(k): _plain(v) for k, v in dict(status).items()}
    return header, []


def _plain(value: Any) -> Any:
    """A status value as msgpack (and JSON) carries it: a non-finite float is nil."""
    if isinstance(value, (float, np.floating)):
        return finite_or_none(float(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def decode_status(raw: RawMessage, header: Header, where: str, peer: str) -> StatusMessage:
    """The typed ``status`` message (inverse of :func:`encode_status`)."""
    status = raw.header.get("status", {})
    if not isinstance(status, dict):
        raise HeaderError(peer, f"{where}: 'status' is not a map")
    return StatusMessage(header, status)


# -- dispatch ------------------------------------------------------------------------------

Message = MarginMessage | FrameMessage | RegistrationMessage | StatusMessage

_DECODERS: dict[str, Callable[[RawMessage, Header, str, str], Message]] = {
    TOPIC_MARGIN: decode_margin,
    TOPIC_FRAME: decode_frame,
    TOPIC_REGISTRATION: decode_registration,
    TOPIC_STATUS: decode_status,
}


def parse(
    raw: RawMessage, *, gap: int = 0, t_arrived: float | None = None, peer: str = "publisher"
) -> Message:
    """Turn a decoded message into its typed object.

    Raises
    ------
    TopicError
        Unknown topic.
    HeaderError, BufferSizeError
        Topic fields missing/mistyped, or contour buffers that disagree with the header.
    """
    arrived = time.time() if t_arrived is None else t_arrived
    header = decode_header(raw, gap, arrived, peer)
    decoder = _DECODERS.get(raw.topic)
    if decoder is None:
        raise TopicError(peer, f"unknown topic {raw.topic!r}")
    where = f"{raw.topic} #{header.seq}"
    try:
        return decoder(raw, header, where, peer)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise HeaderError(peer, f"{where}: malformed field ({type(exc).__name__}: {exc})") from exc
