"""Device configuration (``devices/*.toml``): pydantic models with every option's default.

A device-set file has a ``[probe]`` section (an OpenIGTLink client of a PLUS server or any
tracked-ultrasound device) and/or a ``[playback]`` section (a recording served like a PLUS
server). ``docs/devices.md`` documents every key. Load with :func:`load_device_set`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from usnav.config.loader import load_toml_model
from usnav.errors import ConfigError, TransformError
from usnav.igtl import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT, ReconnectPolicy
from usnav.transforms.names import split_name

#: The fastest playback speed factor a recording is served at (``rate``, ``usnav replay
#: --rate``, ``usnav demo --rate``)
MAX_RATE = 1000.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_host(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_allow(values: list[str]) -> list[str]:
    for entry in values:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(
                f"{entry!r} is not an IP address or network (e.g. 192.168.1.20 or 192.168.1.0/24)"
            ) from exc
    return values


def _check_transform_name(name: str) -> None:
    try:
        split_name(name)
    except TransformError as exc:
        raise ValueError(str(exc)) from exc


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ReconnectConfig(_Strict):
    """Backoff between connection attempts: ``initial_s``, then × ``factor`` up to ``max_s``."""

    initial_s: float = Field(default=0.05, gt=0, le=60)
    max_s: float = Field(default=1.0, gt=0, le=300)
    factor: float = Field(default=2.0, ge=1.0, le=10)

    def policy(self) -> ReconnectPolicy:
        """The client's backoff (delays in s)."""
        return ReconnectPolicy(self.initial_s, self.max_s, self.factor)


class ProbeConfig(_Strict):
    """An OpenIGTLink client that assembles tracked frames (``[probe]``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    image_device: str = Field(default="Image_Reference", min_length=1, max_length=20)
    image_transform: str = Field(
        default="ImageToReference",
        description="name of the transform the IMAGE matrix carries; '' to ignore the matrix",
    )
    transforms: list[str] = Field(default_factory=list)
    header_version: Literal[1, 2] = 2
    receive_timeout_s: float = Field(default=2.0, gt=0, le=60)
    no_signal_s: float = Field(default=1.0, gt=0, le=60)
    watchdog_s: float = Field(default=0.5, gt=0, le=60)
    pairing_wait_s: float = Field(default=0.1, ge=0, le=5)
    max_interpolation_gap_s: float = Field(default=0.25, gt=0, le=10)
    time_offset_s: float | None = Field(default=None, ge=-2.0, le=2.0)
    calibration: str = ""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=2**31)
    frame_queue: int = Field(default=64, ge=1, le=100_000)
    when_full: Literal["drop-oldest", "wait"] = "drop-oldest"
    reconnect: ReconnectConfig = ReconnectConfig()

    _host = field_validator("host")(_check_host)

    @field_validator("header_version", mode="before")
    @classmethod
    def _version_not_bool(cls, value: object) -> object:
        # Literal[1, 2] takes true, which equals 1, even in strict mode
        if isinstance(value, bool):
            raise ValueError("must be 1 or 2 (the OpenIGTLink header version)")
        return value

    @field_validator("image_transform")
    @classmethod
    def _transform_name(cls, value: str) -> str:
        if value:
            _check_transform_name(value)
        return value

    @field_validator("transforms")
    @classmethod
    def _transform_names(cls, values: list[str]) -> list[str]:
        for v in values:
            _check_transform_name(v)
            if len(v) > 20:
                raise ValueError(f"{v!r} is longer than the 20 characters of a device name")
        return values


class PlaybackConfig(_Strict):
    """A recording served over OpenIGTLink like a PLUS server (``[playback]``)."""

    recording: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    allow: list[str] = Field(default_factory=list)
    rate: float | Literal["max"] = 1.0
    loop: StrictBool = False
    calibration: str = ""
    image_device: str = Field(default="Image_Reference", min_length=1, max_length=20)
    reference_frame: str = "Reference"
    send_invalid_transforms: StrictBool = True
    wait_for_client: StrictBool = True
    keepalive_s: float = Field(default=0.5, gt=0, le=60)
    max_clients: int = Field(default=16, ge=1, le=1024)
    send_queue_messages: int = Field(default=256, ge=4, le=100_000)
    send_timeout_s: float = Field(default=5.0, gt=0, le=600)

    _host = field_validator("host")(_check_host)
    _allow = field_validator("allow")(_check_allow)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_given(cls, value: object) -> object:
        # one line for the key (the union said it twice: 'rate.float' and "rate.literal['max']"),
        # and true is not a speed factor of 1
        if value != "max" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"must be 'max' or a speed factor in (0, {MAX_RATE:g}]")
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: float | str) -> float | str:
        if value != "max" and not (0 < float(value) <= MAX_RATE):
            raise ValueError(f"must be 'max' or a speed factor in (0, {MAX_RATE:g}]")
        return value

    @model_validator(mode="after")
    def _safe_bind(self) -> PlaybackConfig:
        if not _is_loopback(self.host) and not self.allow:
            raise ValueError(
                f"host {self.host!r} is not loopback: also give allow = [peer "
                "addresses] (listening sockets bind 127.0.0.1 otherwise)"
            )
        return self


class DeviceSet(_Strict):
    """A ``devices/*.toml`` file."""

    description: str = ""
    probe: ProbeConfig | None = None
    playback: PlaybackConfig | None = None


def load_device_set(path: str | Path) -> DeviceSet:
    """Read and validate a device-set file.

    Raises
    ------
    ConfigError
        Missing file, TOML error, unknown key, wrong type or value (names file and key).
    """
    device_set = load_toml_model(path, DeviceSet)
    if device_set.probe is None and device_set.playback is None:
        raise ConfigError(path, "has neither a [probe] nor a [playback] section")
    return device_set


def load_probe_config(path: str | Path) -> ProbeConfig:
    """The ``[probe]`` section of a device-set file (ConfigError if absent)."""
    device_set = load_device_set(path)
    if device_set.probe is None:
        raise ConfigError(path, "has no [probe] section", "see devices/plus-server.toml")
    return device_set.probe


def resolve_path(value: str, config_file: str | Path | None) -> Path:
    """A path from a config: as given if it exists, else relative to the config's folder."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or config_file is None:
        return p
    beside = Path(config_file).resolve().parent / p
    if beside.exists():
        return beside
    above = Path(config_file).resolve().parent.parent / p
    return above if above.exists() else p
