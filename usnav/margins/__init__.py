"""Per-frame tumor margins: MRI label resliced into the frame, refined on the ultrasound."""

from usnav.margins.estimator import (
    CYST,
    SOLID,
    FrameMargins,
    MarginContour,
    MarginEstimator,
    StylusDistance,
    TumorExtent,
)
from usnav.margins.options import MarginOptions

__all__ = [
    "CYST",
    "SOLID",
    "FrameMargins",
    "MarginContour",
    "MarginEstimator",
    "MarginOptions",
    "StylusDistance",
    "TumorExtent",
]
