"""The preoperative MRI as the ultrasound sees it after the laminectomy.

The MRI shows the laminae, the spinous processes and the paraspinal soft tissue over the
levels the surgeon decompresses; the ultrasound, scanning through the saline-filled wound,
sees none of them. Where the similarity compares the two, that tissue is a structure the
ultrasound cannot match, and it pulls the optimum along the spine (notes/indep-sim: 26 of 37
candidates refused as ambiguous along the sweep with the preoperative MRI, 0 of 8 with an MRI
of the operated spine — on that simulator, whose preoperative MRI shows the laminae; on usnav's
own simulator, whose transverse sweeps stop 1-5 mm short of the wound's ends, filling the
removed tissue did not make the similarity any steeper along the sweep: session 35,
notes/session35-along-sweep/report.md). :func:`operated_mri` gives the registration the MRI
of the operated spine: the tissue the surgery removed (a label map the planner draws in MRI
space, e.g. the laminae to be removed and the wound above them) is filled with fluid.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from usnav.errors import InputError
from usnav.io.volume import Volume

#: ``Volume.meta`` key of an operated MRI: the removed-tissue label it was filled from.
REMOVED_TISSUE_KEY = "usnav_removed_tissue_label"


#: a removed-tissue "label" with more distinct values than this is an image, not a label map
MAX_REMOVED_LABEL_VALUES = 64


def check_removed_is_label_map(removed: Volume) -> None:
    """Refuse a removed-tissue label that is not a label map: non-integer values, or more than
    :data:`MAX_REMOVED_LABEL_VALUES` distinct values.

    An MRI (or the intraoperative ultrasound volume) given as ``--removed`` by mistake is > 0
    almost everywhere: every voxel became fluid, the registration compared the sweep with a
    uniform volume (similarity flat, correction 0 mm) and said only "REJECTED", exit 0, in
    ``usnav register``, ``usnav run`` and ``usnav evaluate`` alike (session 40).

    Raises
    ------
    InputError
        Naming the file, what was found and what to give instead.
    """
    data = np.asarray(removed.data)
    what = "give the label map of the tissue the surgery removed (laminae, spinous processes, "
    what += "the wound: > 0), not an image"
    if data.dtype.kind == "f":
        marked = data[data != 0]
        if not np.all(np.isfinite(marked)) or not np.all(np.mod(marked, 1) == 0):
            raise InputError(
                removed.source,
                "the removed-tissue label is not a label map (it has non-integer values — an "
                "image or a probability map?)",
                what,
            )
    # a sample first: an MRI shows its many grey levels in ~100 000 voxels, cheaply
    sample = data.ravel(order="K")[:: max(1, data.size // 100_000)]
    many = len(np.unique(sample)) > MAX_REMOVED_LABEL_VALUES
    if many or len(np.unique(data)) > MAX_REMOVED_LABEL_VALUES:
        raise InputError(
            removed.source,
            f"the removed-tissue label has more than {MAX_REMOVED_LABEL_VALUES} distinct "
            "values: not a label map (the MRI given as --removed?)",
            what,
        )


def removed_in_mri_grid(mri: Volume, removed: Volume) -> np.ndarray:
    """The removed-tissue label (``removed.data > 0``, any grid in MRI RAS mm) on the MRI's
    voxel grid (nearest neighbour), as a boolean array of ``mri.shape``.

    Raises
    ------
    InputError
        The volume is not a label map (an MRI or a probability map given by mistake), the
        label marks nothing, or nothing inside the MRI.
    """
    check_removed_is_label_map(removed)
    marked = np.argwhere(np.asarray(removed.data) > 0)
    if not len(marked):
        raise InputError(
            removed.source,
            "the removed-tissue label marks no voxel (> 0): give the label of the tissue the "
            "surgery removed (laminae, spinous processes, the wound), or leave it out",
        )
    # the marked voxels' box (± one voxel) in MRI voxel indices: only that part is resampled
    lo, hi = marked.min(axis=0) - 1, marked.max(axis=0) + 1
    corners = np.array(
        [[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    )
    to_mri_voxels = mri.world_to_voxel @ removed.affine
    ijk = (corners @ to_mri_voxels.T)[:, :3]
    start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, mri.shape)
    out = np.zeros(mri.shape, dtype=bool)
    if np.any(stop <= start):
        raise InputError(
            removed.source,
            "the removed-tissue label lies outside the MRI: it must be drawn in the MRI's space "
            "(RAS mm, the MRI's frame)",
        )
    grid = np.indices(tuple(stop - start), dtype=np.float64).reshape(3, -1) + start[:, None]
    to_label = removed.world_to_voxel @ mri.affine
    where = to_label[:3, :3] @ grid + to_label[:3, 3:4]
    values = map_coordinates(
        (np.asarray(removed.data) > 0).astype(np.uint8), where, order=0, mode="constant", cval=0
    )
    out[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = (values > 0).reshape(
        tuple(stop - start)
    )
    if not out.any():
        raise InputError(
            removed.source,
            "the removed-tissue label covers no MRI voxel centre: it must be drawn in the MRI's "
            "space (RAS mm, the MRI's frame)",
        )
    return out


def operated_mri(mri: Volume, removed: Volume, fill_percentile: float = 99.5) -> Volume:
    """The MRI with the tissue the surgery removed filled with fluid.

    Parameters
    ----------
    mri
        The preoperative MRI (RAS mm).
    removed
        Label map of the tissue the surgery removed (> 0), in the MRI's space (any grid): the
        laminae and spinous processes over the decompressed levels and the wound above them,
        which the ultrasound sees as saline.
    fill_percentile
        The fluid's MRI intensity: this percentile of the MRI's voxels (99.5: the brightest
        tissue, as fluid is on T2; for a T1 MRI, where fluid is dark, a low one).

    Returns
    -------
    Volume
        A copy of ``mri`` (same grid and dtype) with the removed voxels at the fluid intensity.
    """
    if not 0.0 <= fill_percentile <= 100.0:
        raise ValueError(f"fill_percentile must lie in [0, 100], got {fill_percentile}")
    mask = removed_in_mri_grid(mri, removed)
    fluid = np.percentile(np.asarray(mri.data), fill_percentile)
    data = np.array(mri.data, copy=True)
    data[mask] = np.asarray(fluid).astype(data.dtype)
    return Volume(
        data,
        mri.affine.copy(),
        source=f"{mri.source} (removed tissue from {removed.source} filled with fluid)",
        meta={**mri.meta, REMOVED_TISSUE_KEY: removed.source},
        read_as=mri.read_as,
    )
