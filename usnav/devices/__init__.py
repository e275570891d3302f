"""Devices: OpenIGTLink transport, the probe client, the playback server and the recorder.

Every device implements :class:`usnav.devices.base.Device` (connect / start / stop / close,
context manager, an explicit :class:`~usnav.devices.base.DeviceState`). See docs/devices.md.

>>> from usnav.devices import ProbeClient, ProbeConfig, PlaybackServer, serve_in_subprocess
"""

from usnav.devices.base import Device, DeviceState, StateChange
from usnav.devices.config import DeviceSet, PlaybackConfig, ProbeConfig, load_device_set
from usnav.devices.playback import PlaybackProcess, PlaybackServer, serve_in_subprocess
from usnav.devices.probe import ProbeClient
from usnav.devices.recorder import RecordResult, record
from usnav.igtl import IgtlClient, IgtlServer

__all__ = [
    "Device",
    "DeviceSet",
    "DeviceState",
    "IgtlClient",
    "IgtlServer",
    "PlaybackConfig",
    "PlaybackProcess",
    "PlaybackServer",
    "ProbeClient",
    "ProbeConfig",
    "RecordResult",
    "StateChange",
    "load_device_set",
    "record",
    "serve_in_subprocess",
]
