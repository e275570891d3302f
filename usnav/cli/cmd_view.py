"""``usnav view``: the surgeon's display of tumor margins (or a headless PNG snapshot)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usnav.defaults import DISPLAY_ENDPOINT


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 1000x640, got {text!r}"
        ) from exc
    return w, h


def add_mri_arguments(p: argparse.ArgumentParser) -> None:
    """--mri and --label: what the display reslices beside the ultrasound (view and web)."""
    p.add_argument(
        "--mri",
        type=Path,
        metavar="FILE",
        help="the preoperative MRI (.nii/.nii.gz/.nrrd/.mha): shown resliced through the "
        "ultrasound plane beside it, with the sagittal and axial locators",
    )
    p.add_argument(
        "--label",
        type=Path,
        metavar="FILE",
        help="the tumor label map (with --mri): the tumor on the locators and the distance "
        "from the image plane to it",
    )


def add_subscriber_arguments(p: argparse.ArgumentParser) -> None:
    """--max-message-bytes: the bound on what a display takes from a publisher (view and web)."""
    from usnav.protocol.wire import MAX_MESSAGE_BYTES

    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=MAX_MESSAGE_BYTES,
        metavar="N",
        help=f"largest message part taken from the publisher, bytes ({MAX_MESSAGE_BYTES}: "
        "twice the largest frame the probe side accepts); a publisher that sends a larger one "
        "is dropped before anything is allocated, shown STALE with the reason, and "
        "reconnected",
    )


def load_mri_context(mri: Path | None, label: Path | None):
    """The MriContext for --mri/--label (None without --mri)."""
    from usnav.errors import InputError
    from usnav.io.volume import load_volume
    from usnav.viewer.mri import MriContext

    if mri is None:
        if label is not None:
            raise InputError("--label", "needs --mri (the label is drawn on the MRI)")
        return None
    mri_volume = load_volume(mri)
    mri_volume.check_finite()  # a NaN voxel cannot be drawn (register refuses it too)
    label_volume = load_volume(label) if label is not None else None
    check_display_volumes(mri_volume, label_volume)
    return MriContext(mri_volume, label_volume)


def check_display_volumes(mri, label) -> None:
    """Refuse an MRI that is a label map and a label map that is not one (``--mri`` and
    ``--label`` swapped drew a black MRI pane and the whole volume as "tumor", exit 0)."""
    import numpy as np

    from usnav.errors import InputError
    from usnav.margins.options import MarginOptions
    from usnav.pipeline.run import check_label_map

    data = np.asarray(mri.data)
    sample = data[:: max(1, data.shape[0] // 32)]
    values = np.unique(sample)
    if len(values) <= 3 and np.all(np.mod(values, 1) == 0):
        raise InputError(
            mri.source,
            f"--mri holds only the values {', '.join(f'{v:g}' for v in values)}: a label map, "
            "not an MRI",
            "give the MRI as --mri and the tumor segmentation as --label (swapped?)",
        )
    if label is not None:
        options = MarginOptions()
        check_label_map(
            label,
            options.solid_label,
            options.cyst_label,
            hint="give the tumor segmentation as --label and the MRI as --mri (swapped?)",
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="show the tumor margins published by usnav (OpenCV window or --snapshot PNG)",
        description="Subscribes to a usnav publisher and shows the ultrasound with the tumor "
        "(filled and outlined, cyst in another colour), the margin the ultrasound supports "
        "where it differs, a mm scale bar and depth ruler, the patient side at each edge, the "
        "margin numbers, registration quality and age; with --mri also the MRI resliced "
        "through the same plane with the same overlay, and sagittal/axial locators; "
        "latency and fps. The state word is the publisher's display_state, made worse by the "
        "link: a red STALE banner when the probe or the connection is lost or the data are "
        "old, an amber UNCERTAIN one when the registration cannot be trusted to 2 mm "
        "(docs/display.md). Press q or Esc to close the window.",
    )
    p.add_argument(
        "--connect",
        default=DISPLAY_ENDPOINT,
        metavar="ADDR",
        help=f"publisher address (default {DISPLAY_ENDPOINT})",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        metavar="FILE.png",
        help="headless: write one picture after --frames updates (or --timeout) and exit "
        "(its folder is created); nothing received within --timeout: no picture, exit 2",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --snapshot file")
    p.add_argument(
        "--frames", type=int, default=30, metavar="N", help="updates before the snapshot (30)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="longest wait for the snapshot, s (10); then it shows what was there",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=10.0,
        metavar="S",
        help=argparse.SUPPRESS,  # ignored since protocol 2 (the publisher's display_state)
    )
    p.add_argument(
        "--lost-after",
        type=float,
        default=1.5,
        metavar="S",
        help="silence that counts as a lost connection, s (1.5)",
    )
    p.add_argument(
        "--min-quality",
        type=float,
        default=0.5,
        metavar="Q",
        help=argparse.SUPPRESS,  # ignored since protocol 2: a quality score decides nothing
    )
    p.add_argument(
        "--server-key",
        type=Path,
        metavar="FILE",
        help="CURVE: the publisher's public key (server.key) when it publishes beyond loopback",
    )
    p.add_argument(
        "--client-key",
        type=Path,
        metavar="FILE",
        help="CURVE: this display's secret key (client.key_secret), authorised by the publisher",
    )
    add_mri_arguments(p)
    add_subscriber_arguments(p)
    p.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="WxH",
        help="picture size (default: 720 high, each image pane square, a 400-pixel panel)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from usnav.errors import InputError
    from usnav.viewer.app import check_snapshot, run_viewer
    from usnav.viewer.state import ViewerOptions

    if args.snapshot is not None:
        check_snapshot(args.snapshot, force=args.force)
    if args.frames < 1:
        raise InputError("--frames", f"must be at least 1, got {args.frames}")
    if args.timeout <= 0:
        raise InputError("--timeout", f"must be positive, got {args.timeout}")
    try:
        options = ViewerOptions(
            stale_after_s=args.stale_after,
            lost_after_s=args.lost_after,
            min_quality=args.min_quality,
            max_message_bytes=args.max_message_bytes,
            **({"width": args.size[0], "height": args.size[1]} if args.size else {}),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0])
        field = "--size" if name in ("width", "height") else "--" + name.removesuffix("_s")
        raise InputError(field.replace("_", "-"), f"{name}: {first['msg']}") from exc
    mri = load_mri_context(args.mri, args.label)
    result = run_viewer(
        args.connect,
        mri=mri,
        options=options,
        snapshot=args.snapshot,
        frames=args.frames,
        timeout_s=args.timeout,
        curve_server_key=args.server_key,
        curve_client_secret=args.client_key,
    )
    if args.snapshot is not None and result.snapshot is None:
        # nothing at all came (WAITING): no picture; what the link saw, if anything, is said
        detail = result.reason.removeprefix(f"waiting for usnav on {args.connect}").lstrip(": ")
        raise InputError(
            args.connect,
            f"nothing received within {args.timeout:g} s (--timeout)"
            + (f": {detail}" if detail else ""),
            f"check --connect, or start the publisher (usnav run); {args.snapshot} not written",
        )
    state = result.verdict + (f" ({result.reason})" if result.reason else "")
    lost = sum(result.stats.gaps.values())
    summary = (
        f"{result.updates} updates, {result.pictures} pictures "
        f"({result.render_ms:.1f} ms each), lost {lost}, bad {result.stats.skipped_total}"
    )
    if result.snapshot is not None:
        print(f"snapshot {result.snapshot}: {state}; {summary}")
    else:
        print(f"viewer closed: {state}; {summary}", file=sys.stderr)
    return 0
