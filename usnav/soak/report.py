"""Results of a campaign item, as printed and as written to JSON."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Kept per item; further failures are only counted.
MAX_LISTED = 20


@dataclass
class ItemResult:
    """One item (or sub-item) of the campaign.

    ``count``: cases run. ``failed``: cases that broke a rule (crash, hang, traceback, wrong
    exit, unbounded memory, a clean peer not served...). ``failures``: the first
    :data:`MAX_LISTED` of them, one line each. ``figures``: measured numbers (units in the key).
    ``scale``: what was run, in words. ``anchor``: the promise of the trusted system it stands
    beside.
    """

    item: str
    anchor: str = ""
    scale: str = ""
    count: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    figures: dict[str, float | int | str] = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, what: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_LISTED:
            self.failures.append(what)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.fail(what)
        return ok

    def line(self) -> str:
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in self.figures.items())
        verdict = "OK" if self.failed == 0 else f"{self.failed} FAILED"
        return f"{self.item}: {self.count} cases, {verdict}; {figures} ({self.seconds:.0f} s)"


def _fmt(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_json(path: str | Path, seed: int, items: list[ItemResult]) -> Path:
    """Write the campaign's results (with the seed, the host and the time) to ``path``."""
    out = Path(path)
    doc = {
        "seed": seed,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "failed": sum(i.failed for i in items),
        "items": [asdict(i) for i in items],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out
