"""Publishing usnav's results: the ZeroMQ publisher and the 3D Slicer re-export.

The wire protocol itself (schema, encoders and decoders, CURVE) is :mod:`usnav.protocol`.
"""

from __future__ import annotations

from usnav.protocol.wire import DEFAULT_ADDRESS
from usnav.publish.publisher import Publisher

__all__ = ["DEFAULT_ADDRESS", "Publisher"]
