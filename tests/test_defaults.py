"""One source for each default address (usnav/defaults.py): every user of it agrees, and no
module writes its own copy."""

from __future__ import annotations

import re
from pathlib import Path

from usnav import defaults
from usnav.client import DEFAULT_ADDRESS as CLIENT_ADDRESS
from usnav.devices.config import ProbeConfig
from usnav.igtl import DEFAULT_PORT
from usnav.pipeline.config import PipelineOptions
from usnav.protocol.wire import DEFAULT_ADDRESS as WIRE_ADDRESS
from usnav.publish.publisher import DEFAULT_ADDRESS as PUBLISHER_ADDRESS
from usnav.publish.slicer import DEFAULT_SLICER_PORT

PACKAGE = Path(__file__).resolve().parents[1] / "usnav"


def test_every_user_takes_the_default_from_one_place() -> None:
    assert defaults.DISPLAY_ENDPOINT.startswith("tcp://127.0.0.1:")  # loopback by default
    assert CLIENT_ADDRESS == PUBLISHER_ADDRESS == WIRE_ADDRESS == defaults.DISPLAY_ENDPOINT
    assert PipelineOptions().publish_address == defaults.DISPLAY_ENDPOINT
    assert DEFAULT_PORT == ProbeConfig().port == defaults.IGTL_PORT
    assert DEFAULT_SLICER_PORT == defaults.SLICER_PORT


def test_no_module_assigns_its_own_copy() -> None:
    """A default written as a literal (``= "tcp://..."``, ``default=18944``) is a second
    source that will drift; text in docstrings and messages is fine."""
    values = [defaults.DISPLAY_ENDPOINT, str(defaults.IGTL_PORT), str(defaults.SLICER_PORT)]
    literal = "|".join(re.escape(v) for v in values)
    assignment = re.compile(rf"(=|default=)\s*\"?({literal})\"?\s*[,)\n]")
    copies = [
        f"{path.relative_to(PACKAGE)}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "defaults.py"
        for line in path.read_text().splitlines()
        if assignment.search(line + "\n") and not line.lstrip().startswith(("#", ">>>"))
    ]
    assert copies == []
