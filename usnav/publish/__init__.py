"""Publishing usnav's results: the ZeroMQ protocol and publisher, and the 3D Slicer re-export.

``Publisher`` (``usnav.publish.publisher``) is imported lazily so that protocol-only users
(e.g. :mod:`usnav.client`) do not pay for the rest of usnav.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_ADDRESS", "Publisher"]


def __getattr__(name: str) -> Any:
    if name in ("Publisher", "DEFAULT_ADDRESS"):
        from usnav.publish import publisher

        return getattr(publisher, name)
    raise AttributeError(name)
