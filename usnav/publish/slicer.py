"""Re-export to 3D Slicer over OpenIGTLink: the frame, the tumor overlay, and the transforms.

Slicer's OpenIGTLinkIF connects as a client (Slicer: IGT → OpenIGTLinkIF → add a *client*
connector to ``localhost:18945``) and shows, with no plugin:

- ``Image_Reference`` — IMAGE: the ultrasound frame, its matrix = ``ImageToReference``
  (pixel → Reference mm, including mm/pixel), as a PLUS server sends it;
- ``Tumor_Reference`` — IMAGE: the tumor in the frame while the display state is LIVE, uint8
  label values (0 background, the solid and cyst values of the label map), same matrix (show
  it as a label map or with a colour table over the frame);
- ``TumorUncertain_Reference`` — IMAGE: the same overlay while the state is UNCERTAIN (and
  ``Tumor_Reference`` blank then): Slicer draws a label map the same whatever its metadata say,
  so the state travels in the node's name — give this node its own look (e.g. another colour,
  outline only) and an uncertain overlay is never drawn as a LIVE one;
- ``ImageToReference`` and ``ReferenceToMri`` — TRANSFORM, with PLUS's ``TransformStatus``
  metadata. Put the two images under ``ReferenceToMri`` in Slicer's Data module and they line up
  with the MRI (which Slicer loads in RAS, as usnav does).

The display state (:mod:`usnav.protocol.display`, the same rule as every usnav display) goes
with each bundle: metadata ``DisplayState`` / ``DisplayReason`` on the overlay, and
``ReferenceToMri`` carries ``TransformStatus = OK`` only when LIVE (``INVALID`` otherwise, so
Slicer does not present an unchecked or uncertain registration as valid). A STRING
``usnav_status`` says ``LIVE``, ``UNCERTAIN: why`` or ``STALE: why`` when the state changes, when a
client joins, and at least every second. Margins judged STALE (a backlog flushed after a stall)
go out with a blank overlay and ``ImageToReference`` INVALID, as after :meth:`mark_stale`.

Matrices go out in RAS (what Slicer assumes); nothing here converts to LPS. The OpenIGTLink
server is :class:`usnav.igtl.server.IgtlServer` (many clients, each with its own
bounded queue, never blocking the caller).
"""

from __future__ import annotations

import time

import numpy as np

from usnav.defaults import SLICER_PORT
from usnav.frames import TrackedFrame
from usnav.igtl import IgtlServer
from usnav.margins.estimator import FrameMargins
from usnav.protocol.display import (
    LIVE,
    STALE,
    STATE_HOLD_S,
    UNCERTAIN,
    DisplayState,
    StateHold,
)

#: Default port: PLUS's 18944 + 1, so both can run side by side.
DEFAULT_SLICER_PORT = SLICER_PORT

#: ``usnav_status`` is re-sent at least this often (s), and at once to a client that joins:
#: a header-v1 client has no other way to learn the state.
STATUS_RESEND_S = 1.0


class SlicerExporter:
    """Serves frames, tumor overlays and transforms to OpenIGTLink clients such as 3D Slicer.

    Parameters
    ----------
    port
        TCP port to listen on (0 = any free port; read :attr:`port` after :meth:`start`).
    host
        Interface; loopback by default (anything else needs ``allow``).
    allow
        Extra peer addresses/networks allowed to connect (see :class:`IgtlServer`).
    image_name, overlay_name, reference_frame
        PLUS-style names: the IMAGE device names are ``<name>_<reference_frame>``.
    port_option
        The option that set ``port``, named when the port is taken (``usnav run``:
        ``--slicer-port``).
    state_hold_s
        How long a better display state must hold before the bundles show it, s
        (:data:`~usnav.protocol.display.STATE_HOLD_S`): the worse state at once, so the
        overlay does not move between ``Tumor_Reference`` and ``TumorUncertain_Reference`` at
        frame rate when the imaging plane skims the tumor (:func:`publish`).
    """

    def __init__(
        self,
        port: int = DEFAULT_SLICER_PORT,
        host: str = "127.0.0.1",
        *,
        allow: tuple[str, ...] = (),
        image_name: str = "Image",
        overlay_name: str = "Tumor",
        reference_frame: str = "Reference",
        port_option: str = "--port",
        state_hold_s: float = STATE_HOLD_S,
    ):
        self.server = IgtlServer(
            host, port, allow=allow, name="Slicer re-export", port_option=port_option
        )
        self.image_device = f"{image_name}_{reference_frame}"
        self.overlay_device = f"{overlay_name}_{reference_frame}"
        #: the overlay's device while the display state is UNCERTAIN (``overlay_device`` is
        #: blank then): the state is in the node's name, which Slicer shows
        self.uncertain_overlay_device = f"{overlay_name}Uncertain_{reference_frame}"
        #: overlay devices whose last IMAGE drew something (blanked when the state moves on)
        self._drawn: set[str] = set()
        self.image_to_reference_name = f"{image_name}To{reference_frame}"
        self.reference_to_mri_name = f"{reference_frame}ToMri"
        #: bundles sent (each to every connected client)
        self.sent = 0
        self._said: str | None = None  # the state word of the last usnav_status sent
        self._said_at = 0.0  # when (monotonic, s)
        self._said_to: frozenset[str] = frozenset()  # to which clients
        self.stale = False
        #: the worse states said recently: a better one is sent once it has held
        self._hold = StateHold(state_hold_s)

    def start(self) -> SlicerExporter:
        """Listen for clients (returns at once)."""
        self.server.start()
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def clients(self) -> list[str]:
        """Connected clients' addresses."""
        return self.server.clients

    def publish(
        self,
        frame: TrackedFrame,
        image_to_reference: np.ndarray,
        reference_to_mri: np.ndarray | None = None,
        margins: FrameMargins | None = None,
        display: DisplayState | None = None,
    ) -> int:
        """Send one frame's bundle to every connected client.

        Parameters
        ----------
        frame
            The ultrasound frame (uint8/uint16 pixels).
        image_to_reference
            4×4 pixel (col, row, 0, 1) → Reference mm (with mm/pixel).
        reference_to_mri
            The registration in use, or None (then no ``ReferenceToMri`` is sent).
        margins
            The frame's margins; their label image becomes the overlay (all zeros when no
            tumor is in view, so Slicer's overlay clears instead of showing an old one).
        display
            The display state of these margins (from the publisher's rule); None counts as
            UNCERTAIN. Held as every usnav display holds it
            (:func:`usnav.protocol.display.steady_state`): a worse state at once, a better
            one once it has held for ``state_hold_s`` (an imaging plane skimming the tumor
            gives alternately LIVE and UNCERTAIN margins, and the overlay moved between its
            two nodes, the registration between OK and INVALID, at frame rate).

        Returns
        -------
        int
            Clients the bundle was queued for (0 when none is connected: nothing is built).
        """
        # held whether or not a client listens: one that joins meets the state shown
        display = self._hold.shown(
            display or DisplayState(UNCERTAIN, "no display state given"), time.time()
        )
        if not self.server.clients:
            return 0
        from usnav.igtl.codec import (
            ENCODING_UTF8,
            ImageContent,
            Message,
            StringContent,
            TransformContent,
        )

        # PLUS sends UTC; a recording's relative clock is no use to Slicer: send now instead
        stamp = frame.t_device if frame.t_device > 1e9 else time.time()
        # margins judged STALE (e.g. a backlog flushed after a stall, made seconds ago): the
        # frame goes out, but its pose says INVALID (a v1 client gets none) and no tumor
        stale = display.state == STALE
        meta = {
            "FrameNumber": str(frame.frame_number),
            "DisplayState": display.state,
            "DisplayReason": display.reason,
        }
        matrix = np.asarray(image_to_reference, dtype=np.float64)
        image = np.ascontiguousarray(frame.image)
        bundle = [
            Message(
                "IMAGE",
                self.image_device,
                ImageContent.from_array(image, matrix),
                stamp,
                dict(meta),
            )
        ]
        if margins is not None:
            overlay = margins.label_image
            if stale or overlay is None or overlay.shape != image.shape[:2]:
                overlay = np.zeros(image.shape[:2], np.uint8)
            in_view = margins.in_view and not stale
            overlay_meta = {**meta, "TumorInView": "1" if in_view else "0"} | (
                {"Stale": "1"} if stale else {}
            )
            # LIVE draws on Tumor_Reference, UNCERTAIN on TumorUncertain_Reference; the other
            # is blanked once when the state moves (STALE: the blank goes on Tumor_Reference)
            uncertain = display.state == UNCERTAIN
            device = self.uncertain_overlay_device if uncertain else self.overlay_device
            for other in sorted(self._drawn - {device}):
                blank = np.zeros(image.shape[:2], np.uint8)
                bundle.append(
                    Message(
                        "IMAGE",
                        other,
                        ImageContent.from_array(blank, matrix),
                        stamp,
                        {**overlay_meta, "TumorInView": "0"},
                    )
                )
                self._drawn.discard(other)
            bundle.append(
                Message(
                    "IMAGE", device, ImageContent.from_array(overlay, matrix), stamp, overlay_meta
                )
            )
            if overlay.any():
                self._drawn.add(device)
        ok = {"TransformStatus": "OK", "TransformValid": "1"}
        invalid = {"TransformStatus": "INVALID", "TransformValid": "0", **meta}
        bundle.append(
            Message(
                "TRANSFORM",
                self.image_to_reference_name,
                TransformContent(matrix),
                stamp,
                dict(invalid) if stale else dict(ok),
            )
        )
        if reference_to_mri is not None:
            live = display.state == LIVE
            bundle.append(
                Message(
                    "TRANSFORM",
                    self.reference_to_mri_name,
                    TransformContent(np.asarray(reference_to_mri, dtype=np.float64)),
                    stamp,
                    dict(ok) if live else dict(invalid),
                )
            )
        if self._status_due(display.state):
            words = display.state if display.state == LIVE else f"{display.state}: {display.reason}"
            text = StringContent(words, ENCODING_UTF8)
            bundle.append(Message("STRING", "usnav_status", text, stamp, {}))
        delivered = self.server.broadcast(bundle)
        self.sent += 1
        self._last = (matrix, image.shape[:2])
        if reference_to_mri is not None:
            self._last_reference_to_mri = np.asarray(reference_to_mri, dtype=np.float64)
        self.stale = stale
        return delivered

    def _status_due(self, state: str) -> bool:
        """Whether ``usnav_status`` goes with this bundle: when the state word changes, when
        a client joined since the last one (a v1 client reads the state from it alone), and
        every :data:`STATUS_RESEND_S` (not on every change of the reason's wording)."""
        clients = frozenset(self.server.clients)
        now = time.monotonic()
        due = (
            state != self._said
            or not clients <= self._said_to
            or now - self._said_at >= STATUS_RESEND_S
        )
        if due:
            self._said, self._said_at, self._said_to = state, now, clients
        return due

    def mark_stale(self, reason: str) -> int:
        """Tell Slicer the overlay is no longer live (the probe link dropped, tracking lost).

        Sends ``ImageToReference`` and ``ReferenceToMri`` with ``TransformStatus = INVALID``
        (Slicer and SlicerIGT show the transforms as invalid: the last ``ReferenceToMri`` a
        client holds must not say OK through a stale period), a blank overlay with
        ``DisplayState = STALE`` and the reason, and a STRING ``usnav_status`` with the reason.
        Sent once per stale period, again every :data:`STATUS_RESEND_S` and to a client that
        joins; the next :meth:`publish` makes it live again. Before any frame was published
        (the probe never streamed) there is nothing to invalidate: ``usnav_status`` alone
        goes out, so a client that joins is still told the state (until session 43 it was
        told nothing).
        """
        self._hold.note(DisplayState(STALE, reason), time.time())
        if not self.server.clients:
            return 0
        if self.stale and not self._status_due(STALE):  # sent already, to every client
            return 0
        from usnav.igtl.codec import (
            ENCODING_UTF8,
            ImageContent,
            Message,
            StringContent,
            TransformContent,
        )

        stamp = time.time()
        # UTF-8, as publish() says it: reasons hold "×", "—", "±" (US-ASCII raised, and the
        # stale bundle never left)
        text = StringContent(f"STALE: {reason}", ENCODING_UTF8)
        said = Message("STRING", "usnav_status", text, stamp, {})
        last = getattr(self, "_last", None)
        if last is None:
            self.stale = True
            self._status_due(STALE)
            return self.server.broadcast([said])
        matrix, shape = last
        state = {"DisplayState": STALE, "DisplayReason": reason}
        invalid = {"TransformStatus": "INVALID", "TransformValid": "0", **state}
        blanks = sorted({self.overlay_device} | self._drawn)
        self._drawn.clear()
        bundle = [
            Message(
                "IMAGE",
                device,
                ImageContent.from_array(np.zeros(shape, np.uint8), matrix),
                stamp,
                {"TumorInView": "0", "Stale": "1", **state},
            )
            for device in blanks
        ]
        bundle.append(
            Message(
                "TRANSFORM", self.image_to_reference_name, TransformContent(matrix), stamp, invalid
            )
        )
        reference_to_mri = getattr(self, "_last_reference_to_mri", None)
        if reference_to_mri is not None:
            bundle.append(
                Message(
                    "TRANSFORM",
                    self.reference_to_mri_name,
                    TransformContent(reference_to_mri),
                    stamp,
                    dict(invalid),
                )
            )
        bundle.append(said)
        self.stale = True
        self._status_due(STALE)  # said now, to every client connected
        return self.server.broadcast(bundle)

    def close(self, reason: str = "usnav stopped") -> None:
        """Tell every client the data are no longer live, then disconnect and stop listening.

        Slicer keeps the nodes it holds when the connection ends: without a last STALE
        bundle (as :meth:`mark_stale`, with ``reason``) its ``ReferenceToMri`` stayed OK and
        the tumor drawn as LIVE after ``usnav run`` stopped. Waits at most 0.5 s for the
        bundle to go out. Idempotent.
        """
        if self.server.clients:
            self.stale = False  # say it again, with why: the connection ends now
            if self.mark_stale(reason):
                self.server.flush(timeout_s=0.5)
        self.server.stop()

    def __enter__(self) -> SlicerExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
