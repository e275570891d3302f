"""Display benchmarks: where the MRI plane is made, the viewer with the MRI pane, and ``usnav
web`` measured in a real browser.

- **MRI plane, display vs protocol.** The display reslices the MRI through each frame's plane
  itself. The alternative — the pipeline reslices and sends the plane as one more buffer of
  the ``frame`` message — is measured in the same run over real ZeroMQ PUB/SUB sockets on
  loopback: the bytes it adds per second at 30 fps, and the publish→receive time it adds per
  frame. The reslice costs the same wherever it runs; on the protocol it runs in the pipeline
  for every frame, needed or not.
- **Viewer render rate with the MRI pane**, beside the ultrasound-only render of the same
  state.
- **usnav web in headless Chromium** (Debian's ``chromium`` + ``chromium-driver``): a real
  publisher in another process at 60 Hz, the bridge, the page; frames per second and the age
  of the drawn margin (frame received by usnav → drawn on the page's canvas, both clocks this
  host's) as the page itself records them. Baseline: the age of the same margins when the
  bridge had rendered them (before JPEG transport and the browser's decode and draw).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark


def _phantom_with_mri():
    from usnav.io.volume import Volume
    from usnav.margins import MarginEstimator
    from usnav.margins.phantom import make_phantom
    from usnav.viewer.mri import MriContext

    case = make_phantom(cyst=True, echo="hyper", seed=11, shift_mm=(0.0, -1.5, 1.2))
    margins = MarginEstimator(case.label).estimate(
        case.image, case.image_to_mri, None, frame_number=1
    )
    label = np.asarray(case.label.data)
    i = np.arange(label.shape[0], dtype=np.float32)[:, None, None]
    data = 40.0 + 0.2 * i + 120.0 * (label != 0) + 60.0 * (label == 2)
    mri = MriContext(Volume(data.astype(np.float32), case.label.affine), case.label)
    return case, margins, mri


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transport_ms(extra: np.ndarray | None, image: np.ndarray, count: int) -> list[float]:
    """publish → receive of ``frame`` messages (with the extra buffer or not), ms each."""
    import zmq

    from usnav.protocol import wire as p

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    sub = context.socket(zmq.SUB)
    try:
        pub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.LINGER, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.setsockopt(zmq.MAXMSGSIZE, p.MAX_MESSAGE_BYTES)  # as every usnav subscriber
        sub.connect(f"tcp://127.0.0.1:{port}")
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        header = {
            "schema": p.SCHEMA,
            "version": p.VERSION,
            "topic": "frame",
            "stream": 1,
            "frame_number": 0,
            "t_device": None,
            "t_received": None,
            "ImageToMri": None,
            "age_s": None,
            "quality": None,
            "accepted": False,
        }
        buffers = [("image", image)] + ([("mri_plane", extra)] if extra is not None else [])
        times: list[float] = []
        seq = 0
        deadline = time.monotonic() + 10
        while len(times) < count and time.monotonic() < deadline:
            seq += 1
            t0 = time.perf_counter()
            pub.send_multipart(
                p.encode("frame", {**header, "seq": seq, "t_published": time.time()}, buffers)
            )
            if poller.poll(200):
                parts = sub.recv_multipart()
                p.decode(parts)
                if seq > 5:  # after the subscription has settled
                    times.append(1e3 * (time.perf_counter() - t0))
            time.sleep(0.002)
        return times
    finally:
        sub.close(0)
        pub.close(0)
        context.term()


@benchmark("MRI plane: resliced by the display vs carried on the protocol", "display")
def bench_mri_plane(ctx: BenchContext) -> list[Figure]:
    case, _margins, mri = _phantom_with_mri()
    shape = case.image.shape
    mri.reslice(case.image_to_mri, shape)
    count = 200 if not ctx.full else 1000
    reslice = []
    for k in range(count):
        moved = case.image_to_mri.copy()
        moved[:3, 3] += 0.01 * k
        t0 = time.perf_counter()
        plane = mri.reslice(moved, shape)
        reslice.append(1e3 * (time.perf_counter() - t0))
    full_plane = np.zeros(shape, np.uint8)  # on the wire the plane has the frame's own grid
    with_plane = _transport_ms(full_plane, case.image, count)
    without = _transport_ms(None, case.image, count)
    added_ms = float(np.median(with_plane) - np.median(without))
    fps = 30.0
    return [
        Figure(
            f"MRI plane resliced by the display ({shape[0]}x{shape[1]} frame, "
            f"{plane.shape[0]}x{plane.shape[1]} samples), per frame",
            float(np.median(reslice)),
            "ms",
            "",
            None,
            "on the protocol: pipeline reslice + added publish→receive",
            float(np.median(reslice)) + max(added_ms, 0.0),
            higher_is_better=False,
            note=f"p99 {np.percentile(reslice, 99):.1f} ms; the transport alone adds "
            f"{added_ms:.2f} ms per frame (median of {len(with_plane)} over ZeroMQ loopback)",
        ),
        Figure(
            "MRI plane bandwidth on the protocol at 30 fps (none when the display reslices)",
            full_plane.nbytes * fps / 1e6,
            "MB/s",
            "",
            None,
            "the ultrasound frame topic itself",
            case.image.nbytes * fps / 1e6,
            higher_is_better=False,
            note="uint8 plane on the frame's grid; a uint16 MRI would double it",
        ),
    ]


def published_messages(image, image_to_mri, margins, frame_number: int) -> dict:
    """The frame and margin messages a real Publisher sends for one frame, as a display
    receives them (topic → typed message), without waiting on sockets."""
    from usnav.client import parse
    from usnav.frames import TrackedFrame
    from usnav.protocol import wire as p
    from usnav.publish.publisher import Publisher
    from usnav.registration.estimate import RegistrationEstimate

    captured: list[list[bytes]] = []

    class _Keep(Publisher):
        def _send(self, topic, header, buffers):
            ok = super()._send(topic, header, buffers)
            captured.append([bytes(x) for x in p.encode(topic, header, buffers)])
            return ok

    reg = RegistrationEstimate(np.eye(4), quality=0.9)
    with _Keep("tcp://127.0.0.1:*") as pub:
        frame = TrackedFrame(image, frame_number=frame_number)
        pub.publish_frame(frame, image_to_mri, reg)
        pub.publish_margins(frame, margins, reg)
    return {m.header.topic: m for m in (parse(p.decode(c)) for c in captured)}


@benchmark("viewer render rate with the MRI pane and locators", "display")
def bench_render_with_mri(ctx: BenchContext) -> list[Figure]:
    from usnav.viewer.render import render_with_layout
    from usnav.viewer.state import ViewModel

    case, margins, mri = _phantom_with_mri()
    messages = published_messages(case.image, case.image_to_mri, margins, 1)
    count = 100 if not ctx.full else 600

    def rate(with_mri: bool) -> tuple[float, float, str]:
        model = ViewModel("tcp://127.0.0.1:5556", mri=mri if with_mri else None)
        state = model.update(messages, connected=True, last_message_s=time.time())
        picture = render_with_layout(state)[0]
        times = []
        for _ in range(count):
            state.now = time.time()
            t0 = time.perf_counter()
            render_with_layout(state)
            times.append(time.perf_counter() - t0)
        size = f"{picture.shape[1]}x{picture.shape[0]}"
        return 1.0 / float(np.median(times)), float(np.percentile(times, 99)) * 1e3, size

    fps, p99, size = rate(True)
    base, _, base_size = rate(False)
    return [
        Figure(
            f"viewer render rate, ultrasound + MRI pane + locators ({size})",
            fps,
            "fps",
            "≥ 30 fps",
            fps >= 30.0,
            f"ultrasound only ({base_size})",
            base,
            note=f"median of {count}; p99 {p99:.1f} ms",
        )
    ]


# -- usnav web in a real browser ----------------------------------------------------------


def publish_phantom(address: str, rate_hz: float, seconds: float) -> None:
    """Publish the phantom's frame and margins at ``rate_hz`` (a pipeline stand-in, run in its
    own process by the browser benchmark)."""
    from usnav.frames import TrackedFrame
    from usnav.margins import MarginEstimator
    from usnav.margins.phantom import make_phantom
    from usnav.publish import Publisher
    from usnav.registration.estimate import RegistrationEstimate

    case = make_phantom(cyst=True, echo="hyper", seed=11, shift_mm=(0.0, -1.5, 1.2))
    margins = MarginEstimator(case.label).estimate(
        case.image, case.image_to_mri, None, frame_number=1
    )
    with Publisher(address) as publisher:
        end = time.monotonic() + seconds
        number = 0
        next_t = time.monotonic()
        while time.monotonic() < end:
            # an image-checked registration with a small stated bound: the LIVE path a
            # surgeon watches (the navigation estimate alone is never LIVE)
            reg = RegistrationEstimate(
                np.eye(4),
                quality=0.9,
                uncertainty_mm=1.0,
                source="image",
                t_computed=time.time() - 1,
            )
            frame = TrackedFrame(case.image, frame_number=number, t_received=time.time())
            publisher.publish_frame(frame, case.image_to_mri, reg)
            publisher.publish_margins(frame, margins, reg)
            if number % 30 == 0:
                publisher.publish_status({"fps": rate_hz})
            number += 1
            next_t += 1.0 / rate_hz
            time.sleep(max(0.0, next_t - time.monotonic()))


#: flags under which Debian's headless Chromium runs here (as root, no GPU, no network use)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,700",
)


def start_chromium(profile: Path):
    """A selenium driver of headless Chromium with a fresh profile in ``profile``.

    Raises
    ------
    FileNotFoundError
        chromium or chromedriver is not installed.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        raise FileNotFoundError("chromium and chromedriver (Debian: chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    return driver


def browser_figures(
    seconds: float = 8.0, rate_hz: float = 60.0, max_fps: float | None = None
) -> dict | None:
    """Measure usnav web in headless Chromium; None when chromium/chromedriver are absent."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        return None
    from usnav.web.server import WebDisplay, WebOptions

    _case, _margins, mri = _phantom_with_mri()
    address = f"tcp://127.0.0.1:{_free_port()}"
    code = (
        "import sys; from usnav.bench.bench_display import publish_phantom; "
        "publish_phantom(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))"
    )
    publisher = subprocess.Popen(
        [sys.executable, "-c", code, address, str(rate_hz), str(seconds + 30)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    profile = tempfile.mkdtemp(prefix="usnav-bench-chromium-")
    driver = None
    try:
        limit = {} if max_fps is None else {"max_fps": max_fps}
        with WebDisplay(WebOptions(connect=address, port=0, **limit), mri=mri) as web:
            driver = start_chromium(Path(profile))
            driver.get(web.url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stats = driver.execute_script("return window.usnavStats || null") or {}
                if stats.get("drawn", 0) >= 30 and stats.get("state") == "LIVE":
                    break
                time.sleep(0.1)
            start = driver.execute_script("return window.usnavStats")
            time.sleep(seconds)
            end = driver.execute_script("return window.usnavStats")
            render_ms = list(web.bridge.render_ms)
    finally:
        if driver is not None:
            driver.quit()
        publisher.terminate()
        publisher.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    drawn = end["drawn"] - start["drawn"]
    times = [t for t in end["draw_times"] if t > start["draw_times"][-1]]
    ages = end["ages_ms"][-drawn:] if drawn else []
    bridge = end["bridge_ms"][-drawn:] if drawn else []
    return {
        "fps": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0,
        "age_p50_ms": float(np.percentile(ages, 50)) if ages else float("nan"),
        "age_p99_ms": float(np.percentile(ages, 99)) if ages else float("nan"),
        "bridge_p99_ms": float(np.percentile(bridge, 99)) if bridge else float("nan"),
        "render_ms": float(np.median(render_ms)) if render_ms else float("nan"),
        "drawn": drawn,
        "state": end["state"],
        "rate_hz": rate_hz,
    }


@benchmark("usnav web in headless Chromium", "display")
def bench_browser(ctx: BenchContext) -> list[Figure]:
    result = browser_figures(seconds=8.0 if not ctx.full else 30.0)
    if result is None:
        return []
    out = Path(ctx.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "browser.json").write_text(json.dumps(result))
    note = (
        f"{result['drawn']} pictures drawn from a {result['rate_hz']:.0f} Hz publisher; "
        f"bridge render+JPEG {result['render_ms']:.1f} ms median; state {result['state']}"
    )
    return [
        Figure(
            "usnav web: pictures drawn per second in the browser (loopback)",
            result["fps"],
            "fps",
            "≥ 30 fps",
            result["fps"] >= 30.0,
            "publisher rate offered",
            result["rate_hz"],
            note=note,
        ),
        Figure(
            "usnav web: age of the drawn margin, p99 (frame received → on the canvas)",
            result["age_p99_ms"],
            "ms",
            "≤ 50 ms",
            result["age_p99_ms"] <= 50.0,
            "p99 age when the bridge had rendered it",
            result["bridge_p99_ms"],
            higher_is_better=False,
            note=f"p50 {result['age_p50_ms']:.1f} ms",
        ),
    ]
