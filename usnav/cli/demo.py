"""``usnav demo``: the whole system on the embedded simulated case, end to end.

The simulated case (generated on first use and cached, see :func:`usnav.sim.demo_case`) is
replayed by the playback device in another process over a real loopback OpenIGTLink socket, as
a PLUS server would serve a tracked probe. The live pipeline receives it, applies the probe
calibration, registers the sweep to the MRI while it streams, estimates the tumor margins in
every frame and publishes them over ZeroMQ; a viewer subscribes like any display and its last
picture is written as a snapshot. The summary compares the registration with the simulator's
ground truth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.defaults import DISPLAY_ENDPOINT
from usnav.devices import ProbeClient, serve_in_subprocess
from usnav.devices.config import MAX_RATE, ProbeConfig
from usnav.errors import InputError, UsnavError
from usnav.io.sequence import read_sequence
from usnav.io.volume import load_volume
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.live import LivePipeline
from usnav.registration.files import read_initial


@dataclass
class DemoSummary:
    """What ``usnav demo`` reports."""

    case_dir: Path
    frames_in_recording: int
    passes: int
    frames_received: int = 0
    frames_published: int = 0
    seconds: float = 0.0
    fps_in: float = 0.0
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    compile_seconds: dict[str, float] = field(default_factory=dict)
    initial_mtre_mm: float = float("nan")
    final_mtre_mm: float = float("nan")
    initial_now_mm: float = float("nan")
    final_now_mm: float = float("nan")
    margins_now_mm: float = float("nan")
    margins_source: str = ""
    """The source of the registration the last margins were drawn with; it differs from
    ``final_source`` when the final estimate came after the last frame."""
    margins_after_last_frame: bool = False
    estimates: int = 0
    accepted: int = 0
    rejected: int = 0
    confirmed: int = 0
    final_source: str = ""
    final_quality: float = float("nan")
    snapshot: Path | None = None
    viewer_state: str = ""
    viewer_reason: str = ""
    endpoint: str = ""
    dropped_display: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    streamed_on: bool = False
    """Whether the demo streamed past its passes because no margin had been drawn with an
    image-checked registration by then (:func:`keep_streaming`)."""


def run_demo(
    out_dir: str | Path = "usnav-demo",
    *,
    passes: int = 3,
    rate: float = 1.0,
    live: bool = False,
    cache_dir: str | Path | None = None,
    publish_address: str = DISPLAY_ENDPOINT,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Run the demo and return its summary.

    Parameters
    ----------
    out_dir
        Where the snapshot (``snapshot.png``) is written.
    passes
        How many times the sweep is scanned (the probe goes over the tumor again: the
        registration keeps refining while frames flow).
    rate
        Playback speed factor (1.0 = the recording's own pace, ~30 fps).
    live
        Open the viewer window instead of writing a snapshot (needs a display).
    cache_dir
        Where the demo case is cached (default ``~/.cache/usnav``).
    publish_address
        ZeroMQ endpoint of the margins (a free port is used if it is taken).
    progress
        Called with short messages as the demo advances.
    """
    from usnav.sim import demo_case, load_truth
    from usnav.viewer.app import run_viewer
    from usnav.viewer.mri import MriContext
    from usnav.viewer.window import display_available

    say = progress or (lambda message: None)
    if passes < 1:
        raise UsnavError(f"--passes must be at least 1, got {passes}")
    if not 0 < rate <= MAX_RATE:
        raise UsnavError(
            f"--rate must be a positive speed factor of at most {MAX_RATE:g}, got {rate:g}"
        )
    if live and not display_available():
        raise UsnavError("--live needs a display (DISPLAY/WAYLAND_DISPLAY is not set)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create this folder ({exc.strerror or exc})") from exc

    if publish_address != DISPLAY_ENDPOINT:
        # a given endpoint that is taken or cannot be bound is said before the case is
        # prepared and the server started (the default falls back to a free port instead)
        from usnav.publish import Publisher

        with Publisher(publish_address):
            pass
    from usnav.sim.demo import demo_case_ready

    if not demo_case_ready(cache_dir):  # said only when it is simulated now
        say("simulating the demo case (first run only: 10–20 s)")
    case = demo_case(cache_dir)
    truth = load_truth(case)
    calibration = load_calibration(case / "calibration.toml")
    mri = load_volume(case / "mri.nii.gz")
    label = load_volume(case / "tumor_label.nii.gz")
    initial = read_initial(case / "init_ReferenceToMri.txt")
    with read_sequence(case / "sweep.igs.mha") as seq:
        n_frames = len(seq)
        transforms = [t for t in seq.transform_names if t.endswith("Tracker")]
    summary = DemoSummary(case, n_frames, passes)
    summary.initial_mtre_mm = truth.mtre(initial)

    say("starting the playback server (a PLUS-like OpenIGTLink server in another process)")
    playback = serve_in_subprocess(
        case / "sweep.igs.mha", port=0, rate=rate, loop=passes > 1, wait_for_client=True
    )
    try:
        probe = ProbeClient(
            ProbeConfig(host=playback.host, port=playback.port, transforms=transforms),
            calibration=calibration,
        )
        options = PipelineOptions(publish_address=publish_address)
        pipeline = LivePipeline(probe, label, calibration, initial, mri=mri, options=options)
        say("compiling kernels (cached after the first run)")
        try:
            summary.compile_seconds = pipeline.prepare()
        except UsnavError:
            if publish_address == DISPLAY_ENDPOINT:  # taken: any free port will do
                pipeline.options = PipelineOptions(publish_address="tcp://127.0.0.1:*")
                summary.compile_seconds = pipeline.prepare()
            else:
                raise
        summary.endpoint = pipeline.endpoint
        stop_viewer = threading.Event()
        viewer_result: dict = {}
        snapshot_path = out / "snapshot.png"

        def viewer() -> None:
            try:
                beside = MriContext(mri, label)
                if live:
                    viewer_result["run"] = run_viewer(
                        pipeline.endpoint, stop=stop_viewer, mri=beside
                    )
                else:
                    viewer_result["snapshot"] = _snapshot_viewer(
                        pipeline.endpoint, snapshot_path, stop_viewer, beside
                    )
            except Exception as exc:  # reported in the summary, never fatal
                viewer_result["error"] = str(exc)

        viewer_thread = threading.Thread(target=viewer, name="usnav-demo-viewer", daemon=True)
        viewer_thread.start()
        say(f"streaming {passes} pass(es) of {n_frames} frames; margins on {pipeline.endpoint}")
        t0 = time.monotonic()
        pipeline.start()
        expected = n_frames * passes
        duration_s = expected / (30.0 * rate) if rate > 0 else 0
        deadline = time.monotonic() + max(60.0, 4 * duration_s)
        said_waiting = False
        checked_from: int | None = None  # frames received when margins first used a check
        while time.monotonic() < deadline:
            received = pipeline.counters.received
            drawn = pipeline.last_drawn_estimate
            if checked_from is None and drawn is not None and drawn.checked:
                checked_from = received
            if not keep_streaming(received, expected, n_frames, checked_from, looping=passes > 1):
                break
            if received >= expected and not said_waiting:
                said_waiting = summary.streamed_on = True
                say(
                    "streaming on: no margin has used an image-checked registration yet "
                    "(a loaded machine registers slower)"
                )
            if not playback.running and received > 0:
                time.sleep(0.5)  # let the last frames through
                break
            time.sleep(0.1)
        time.sleep(0.3)  # the last frames reach the viewer
        summary.seconds = time.monotonic() - t0
        status = pipeline.status()
        stop_viewer.set()
        viewer_thread.join(10.0)
        pipeline.stop()
    finally:
        playback.stop()

    run = viewer_result.get("run")
    shot = viewer_result.get("snapshot")
    if run is not None:
        summary.viewer_state, summary.viewer_reason = run.verdict, run.reason
    elif shot is not None:
        summary.snapshot, summary.viewer_state, summary.viewer_reason = shot
    elif "error" in viewer_result:
        summary.viewer_state, summary.viewer_reason = "failed", viewer_result["error"]
    final = pipeline.current_estimate()
    summary.final_mtre_mm = truth.mtre(final.reference_to_mri)
    # where the tumor is now (cord shift included): the global estimate, and the one margins
    # are drawn with (the tumor stage's, when it applied)
    summary.initial_now_mm = truth.mtre_now(initial)
    summary.final_now_mm = truth.mtre_now(final.reference_to_mri)
    # the margins are scored with the estimate they were drawn with: with one pass the first
    # image-based estimate may be accepted after the last frame, and no margin used it
    drawn = pipeline.last_drawn_estimate or final
    summary.margins_now_mm = truth.mtre_now(drawn.margins_reference_to_mri)
    summary.margins_source = drawn.source
    summary.margins_after_last_frame = not np.array_equal(
        drawn.margins_reference_to_mri, final.margins_reference_to_mri
    )
    summary.final_source, summary.final_quality = final.source, final.quality
    if pipeline.worker is not None:
        st = pipeline.worker.stats
        summary.estimates, summary.accepted, summary.rejected = st.updates, st.accepted, st.rejected
        summary.confirmed = st.confirmed
    summary.frames_received = pipeline.counters.received
    summary.frames_published = pipeline.counters.published
    summary.fps_in = summary.frames_received / summary.seconds if summary.seconds else 0.0
    summary.latency_p50_ms = status["latency_p50_ms"]
    summary.latency_p99_ms = status["latency_p99_ms"]
    # counted after the stop, like frames_received/published, so the counts add up
    summary.dropped_display = int(pipeline.counters.display_dropped)
    summary.problems = dict(pipeline.counters.problems)
    if not np.isfinite(summary.final_mtre_mm):
        raise UsnavError("the demo produced no registration estimate")
    return summary


def keep_streaming(
    received: int, expected: int, pass_frames: int, checked_from: int | None, *, looping: bool
) -> bool:
    """Whether the demo streams on (before its deadline).

    The demo shows the registration at work: it streams the passes asked for and, when the
    sweep loops (more than one pass) and by then no margin has been drawn with a registration
    checked on the images (a loaded machine registers slower: the worker's first accepted
    estimate can come after the last planned frame, and the demo then ended on the
    navigation's registration), it streams on until margins have been drawn with one for a
    whole pass (the tumor swept with it) — the caller's deadline bounds it.

    Parameters
    ----------
    received
        Frames received so far.
    expected
        Frames of the passes asked for.
    pass_frames
        Frames of one pass.
    checked_from
        Frames received when a margin was first drawn with an image-checked registration
        (None: none yet).
    looping
        Whether the playback loops the sweep (more than one pass asked for).
    """
    if received < expected:
        return True
    if not looping:
        return False
    if checked_from is None:
        return True
    # margins drawn with a check within the planned passes: as before, no more; a later
    # check gets a whole pass
    return checked_from > expected and received < checked_from + pass_frames


def _snapshot_viewer(
    address: str, path: Path, stop: threading.Event, mri=None
) -> tuple[Path | None, str, str]:
    """Subscribe like a display; write the clearest picture of the tumor seen.

    Among the pictures drawn while the tumor is in view and the verdict is LIVE or UNCERTAIN
    (a LIVE one first, then one drawn with an image-checked registration: UNCERTAIN is kept
    only when the run never was LIVE, and the picture then says so in its banner), the
    largest tumor cross-section where the ultrasound supports at least 70 % of the margin is
    kept (else the largest; the last picture if there was none), so the snapshot shows what
    the surgeon sees over the tumor, with real ultrasound evidence, rather than whichever
    frame came last.
    """
    import cv2

    from usnav.client import MarginMessage, Subscriber
    from usnav.viewer.render import render_with_layout
    from usnav.viewer.state import LIVE, UNCERTAIN, ViewerOptions, ViewModel, assess

    options = ViewerOptions()
    subscriber = Subscriber(address)
    model = ViewModel(address, mri=mri)
    best: tuple[tuple[bool, bool, bool, float], np.ndarray, str, str] | None = None
    last: tuple[np.ndarray, str, str] | None = None
    try:
        while not stop.is_set():
            messages = subscriber.receive_latest(timeout_s=1 / 30)
            if not messages:
                continue
            state = model.update(
                messages,
                connected=subscriber.connected,
                last_message_s=subscriber.last_message_time,
                gaps=sum(subscriber.stats.gaps.values()),
                skipped=subscriber.stats.skipped_total,
            )
            # the verdict is cheap; the picture is drawn only when it may be kept
            verdict = assess(state, options)
            margin = state.margin
            if (
                verdict.word in (LIVE, UNCERTAIN)
                and isinstance(margin, MarginMessage)
                and margin.in_view
                and margin.header.frame_number == state.image_frame_number
            ):
                extent = margin.header.raw.get("extent") or {}
                area = float(extent.get("area_mm2") or 0.0)
                seen = float(margin.supported_fraction)
                checked = bool(margin.header.registration_checked)
                score = (
                    verdict.word == LIVE,
                    checked,
                    bool(np.isfinite(seen) and seen >= 0.7),
                    area,
                )
                if best is None or score > best[0]:
                    picture, _, verdict = render_with_layout(state, options)
                    best = (score, picture, verdict.word, verdict.reason)
        if best is None and model.state.last_message_s is not None:
            picture, _, verdict = render_with_layout(model.state, options)
            last = (picture, verdict.word, verdict.reason)
    finally:
        subscriber.close()
    chosen = (best[1], best[2], best[3]) if best is not None else last
    if chosen is None:
        return None, "no picture", "nothing was received"
    cv2.imwrite(str(path), chosen[0], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path, chosen[1], chosen[2]
