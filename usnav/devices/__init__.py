"""Devices: OpenIGTLink transport, the probe client, the playback server and the recorder.

Every device implements :class:`usnav.devices.base.Device` (connect / start / stop / close,
context manager, an explicit :class:`~usnav.devices.base.DeviceState`).
"""

from usnav.devices.base import Device, DeviceState, StateChange

__all__ = ["Device", "DeviceState", "StateChange"]
