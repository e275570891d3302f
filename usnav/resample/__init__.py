"""Resampling primitives shared by registration, margins and the simulator.

Each sampler names its edge rule, because the rooms need different ones: registration must
never see a border as an edge (``trilinear_nan``: outside is invalid), the simulator marches
rays that may graze the volume's faces (``trilinear_clamp``: the nearest face's value).
"""

from usnav.resample._kernels import cell_clamp, trilinear_clamp, trilinear_nan

__all__ = ["cell_clamp", "trilinear_clamp", "trilinear_nan"]
