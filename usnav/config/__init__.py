"""Typed, validated configuration: device sets (``devices/*.toml``) and calibrations
(``calibration/*.toml``). If a config object is constructed, it is valid."""

from usnav.config.loader import format_validation_error, load_toml_model, validate_file_data

__all__ = ["format_validation_error", "load_toml_model", "validate_file_data"]
