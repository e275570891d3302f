"""One source for each default address a user meets: ports and endpoints.

Everything listens on, or connects to, loopback unless a device file or a flag names another
interface on purpose.
"""

from __future__ import annotations

#: OpenIGTLink: the port of a PLUS server and of 3D Slicer's OpenIGTLinkIF.
IGTL_PORT = 18944
#: usnav's 3D Slicer re-export: PLUS's port + 1, so both can run side by side.
SLICER_PORT = 18945
#: Where ``usnav run`` publishes margins to displays (ZeroMQ PUB) and where displays connect.
DISPLAY_ENDPOINT = "tcp://127.0.0.1:5556"
#: ``usnav web``: the page for browsers (HTTP and its WebSocket).
WEB_PORT = 8080

__all__ = ["DISPLAY_ENDPOINT", "IGTL_PORT", "SLICER_PORT", "WEB_PORT"]
