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
from usnav.web.server import WebOptions

PACKAGE = Path(__file__).resolve().parents[1] / "usnav"


def test_every_user_takes_the_default_from_one_place() -> None:
    assert defaults.DISPLAY_ENDPOINT.startswith("tcp://127.0.0.1:")  # loopback by default
    assert CLIENT_ADDRESS == PUBLISHER_ADDRESS == WIRE_ADDRESS == defaults.DISPLAY_ENDPOINT
    assert PipelineOptions().publish_address == defaults.DISPLAY_ENDPOINT
    assert DEFAULT_PORT == ProbeConfig().port == defaults.IGTL_PORT
    assert DEFAULT_SLICER_PORT == defaults.SLICER_PORT
    assert WebOptions().port == defaults.WEB_PORT


def test_services_that_run_together_have_their_own_ports() -> None:
    """Session 30 left 'default ports shared'. A PLUS server (or usnav replay), usnav run with
    its publisher and Slicer re-export, and usnav web run on one workstation together: each
    listens on its own default port. (Two *sessions* on one machine share them by design: a
    device address names one server; a site sets its ports.)"""
    publisher_port = int(defaults.DISPLAY_ENDPOINT.rsplit(":", 1)[1])
    ports = [defaults.IGTL_PORT, defaults.SLICER_PORT, publisher_port, defaults.WEB_PORT]
    assert len(set(ports)) == len(ports), ports


def test_no_module_assigns_its_own_copy() -> None:
    """A default written as a literal (``= "tcp://..."``, ``default=18944``) is a second
    source that will drift; text in docstrings and messages is fine."""
    values = [defaults.DISPLAY_ENDPOINT]
    values += [str(p) for p in (defaults.IGTL_PORT, defaults.SLICER_PORT, defaults.WEB_PORT)]
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
