"""Spine simulator: synthetic intramedullary tumor cases with ground truth.

A case is a preoperative T2 MRI (``mri.nii.gz``) with its tumor label, and a tracked freehand
ultrasound sweep (``sweep.igs.mha`` + ``calibration.toml``) simulated by acoustic ray marching
through the *intraoperative* anatomy (laminectomy, cord shift), with ``truth.json``
(ReferenceToMri, landmarks) and a perturbed initial guess. See ``docs/simulator.md``.

>>> from usnav.sim import simulate_case, make_options
>>> files = simulate_case(3, "/tmp/case3", make_options(frames=120))  # doctest: +SKIP
"""

from usnav.sim.case import SIM_VERSION, CaseFiles, SimulatedCase, build_case, simulate_case
from usnav.sim.dataset import DatasetResult, parse_seeds, simulate_dataset
from usnav.sim.demo import DEMO_SEED, demo_case, demo_options
from usnav.sim.families import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    TUNING_FAMILIES,
    Appearance,
    draw_appearance,
    family_names,
)
from usnav.sim.options import SimOptions, make_options
from usnav.sim.truth import CaseTruth, load_truth

__all__ = [
    "DEMO_SEED",
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "SIM_VERSION",
    "TUNING_FAMILIES",
    "Appearance",
    "CaseFiles",
    "CaseTruth",
    "DatasetResult",
    "SimOptions",
    "SimulatedCase",
    "build_case",
    "demo_case",
    "demo_options",
    "draw_appearance",
    "family_names",
    "load_truth",
    "make_options",
    "parse_seeds",
    "simulate_case",
    "simulate_dataset",
]
