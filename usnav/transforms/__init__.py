"""Transforms with PLUS naming: a repository that composes along the frame tree, and timed
pose series that interpolate."""

from usnav.transforms.matrices import (
    decompose_scaled_rigid,
    invert,
    is_rigid,
    rigid_from_params,
    rotation_angle_deg,
)
from usnav.transforms.names import check_frame_name, join_name, split_name
from usnav.transforms.repository import TransformRepository
from usnav.transforms.series import PoseSeries

__all__ = [
    "PoseSeries",
    "TransformRepository",
    "check_frame_name",
    "decompose_scaled_rigid",
    "invert",
    "is_rigid",
    "join_name",
    "rigid_from_params",
    "rotation_angle_deg",
    "split_name",
]
