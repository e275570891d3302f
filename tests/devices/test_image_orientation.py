"""Images in another PLUS orientation than MF are turned to MF where they enter usnav: the
playback server and the probe client (as PLUS does on input), the frame path, and every file
reader. A frame left as stored would put the overlay at the mirrored place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from igtl_helpers import served_frames

from usnav.frames import (
    ORIENTATIONS_2D,
    ORIENTATIONS_3D,
    TrackedFrame,
    TrackedTransform,
    TransformStatus,
    frame_in_mf,
    mf_pixels,
)
from usnav.io.sequence import read_sequence, write_sequence

ROWS, COLS = 5, 7


def stored_as(mf: np.ndarray, code: str) -> np.ndarray:
    """``mf`` (rows = far, cols = marked side) as a device with orientation ``code`` stores it,
    from the letters' definition alone: the first letter is where +x points, the second +y."""
    depth, lateral = mf.shape[:2]
    size = {"M": lateral, "U": lateral, "F": depth, "N": depth}
    out = np.zeros((size[code[1]], size[code[0]], *mf.shape[2:]), mf.dtype)
    for d in range(depth):
        for lat in range(lateral):
            at = {"M": lat, "U": lateral - 1 - lat, "F": d, "N": depth - 1 - d}
            out[at[code[1]], at[code[0]]] = mf[d, lat]
    return out


@pytest.mark.parametrize("code", ORIENTATIONS_2D + ORIENTATIONS_3D)
def test_every_orientation_is_turned_back_to_mf(code: str) -> None:
    mf = np.arange(ROWS * COLS, dtype=np.uint8).reshape(ROWS, COLS)
    stored = stored_as(mf, code[:2])
    turned, mf_to_stored = mf_pixels(stored, code)
    np.testing.assert_array_equal(turned, mf)
    # the returned matrix says where each MF pixel sits in the stored image
    for r in range(ROWS):
        for c in range(COLS):
            col, row = (mf_to_stored @ [c, r, 0, 1])[:2].round().astype(int)
            assert stored[row, col] == mf[r, c]
    rgb = np.stack([mf, mf + 1, mf + 2], axis=-1)  # colour frames turn the same way
    np.testing.assert_array_equal(mf_pixels(stored_as(rgb, code[:2]), code)[0], rgb)


def test_unknown_orientation_is_refused_and_unspecified_is_kept() -> None:
    image = np.zeros((ROWS, COLS), np.uint8)
    with pytest.raises(ValueError, match="orientation"):
        mf_pixels(image, "XY")
    kept, matrix = mf_pixels(image, "??")
    assert kept is image and np.array_equal(matrix, np.eye(4))


def test_a_received_image_matrix_turns_with_its_pixels() -> None:
    """An OpenIGTLink IMAGE's matrix placed the pixels as sent: after the turn, the same pixel
    content must sit at the same place in space; a calibration (MF-defined) is kept."""
    mf = np.random.default_rng(1).permutation(ROWS * COLS).astype(np.uint8).reshape(ROWS, COLS)
    placed = np.array([[0, 0.2, 0, 5], [0.3, 0, 0, -4], [0, 0, 1, 2], [0, 0, 0, 1.0]])
    calibration = np.diag([0.1, 0.1, 1, 1.0])
    frame = TrackedFrame(
        image=stored_as(mf, "NU"),
        transforms={
            "ImageToReference": TrackedTransform(placed),
            "ImageToProbe": TrackedTransform(calibration, TransformStatus.OK),
        },
        orientation="NU",
    )
    turned = frame_in_mf(frame, image_transforms=("ImageToReference",))
    assert turned.orientation == "MF" and frame.orientation == "NU"
    np.testing.assert_array_equal(turned.image, mf)
    np.testing.assert_array_equal(turned.transforms["ImageToProbe"].matrix, calibration)
    new = turned.transforms["ImageToReference"].matrix
    for r, c in ((0, 0), (ROWS - 1, 2), (3, COLS - 1)):
        # where is this MF pixel's content stored, and where did the sender put that pixel?
        hits = np.argwhere(frame.image == mf[r, c])
        assert len(hits) == 1  # every value is distinct
        row, col = hits[0]
        np.testing.assert_allclose(new @ [c, r, 0, 1], placed @ [col, row, 0, 1])
    assert frame_in_mf(turned) is turned  # MF: nothing to do


def _twin_recordings(folder: Path) -> tuple[Path, Path]:
    """The same 6 frames stored MF and MN (the MN file's pixels upside down)."""
    rng = np.random.default_rng(7)
    frames = []
    for k in range(6):
        pose = np.eye(4)
        pose[:3, 3] = [10 + k, 2, 3]
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 256, (24, 32), dtype=np.uint8),
                transforms={
                    "ProbeToTracker": TrackedTransform(pose),
                    "ReferenceToTracker": TrackedTransform(np.eye(4)),
                },
                t_device=50.0 + k / 30,
                frame_number=k,
            )
        )
    mf = write_sequence(folder / "mf.igs.mha", frames)
    for f in frames:
        f.image = np.ascontiguousarray(f.image[::-1])
        f.orientation = "MN"
    mn = write_sequence(folder / "mn.igs.mha", frames, orientation="MN")
    return mf, mn


def _received(recording: Path) -> list[TrackedFrame]:
    return served_frames(recording, 6, np.diag([0.2, 0.25, 1.0, 1.0]), ["ProbeToTracker"])


def test_playback_and_probe_deliver_an_mn_recording_as_its_mf_twin(tmp_path: Path) -> None:
    mf_file, mn_file = _twin_recordings(tmp_path)
    with read_sequence(mn_file) as seq:
        assert seq.frame(0).orientation.startswith("MN")  # the file really says MN
    from_mf, from_mn = _received(mf_file), _received(mn_file)
    for a, b in zip(from_mf, from_mn, strict=True):
        assert b.orientation == "MF"
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_allclose(
            b.transforms["ImageToReference"].matrix,
            a.transforms["ImageToReference"].matrix,
            atol=1e-6,
        )
