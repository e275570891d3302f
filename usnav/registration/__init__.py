"""Ultrasound-to-MRI registration (LC² on a Numba core), point-based initial alignment,
volume reconstruction and the streaming registration worker."""

from usnav.registration.estimate import RegistrationEstimate

__all__ = ["RegistrationEstimate"]
