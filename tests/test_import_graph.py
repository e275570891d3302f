"""Imports point one way: the house reads as the data flows.

- No arrow from a wire library (OpenIGTLink, the ZeroMQ schema and its client), ``io`` or the
  core (frames, transforms, errors, config, defaults) into a stage (calibration, registration,
  margins, publish, pipeline).
- No arrow from a stage into the tools that run it: bench, the demo's orchestration, the
  viewer.
- Nothing but ``usnav.__main__`` imports the command line: it is the only room that may import
  everything.

Read from the source (every ``import``, including those inside functions), and checked once
more at run time: loading the stages does not load a tool.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "usnav"

#: The wire libraries: OpenIGTLink, the ZeroMQ display protocol and its Python client.
WIRE = ["usnav.igtl", "usnav.protocol", "usnav.client"]
IO = ["usnav.io"]
CORE = [
    "usnav.frames",
    "usnav.transforms",
    "usnav.errors",
    "usnav.config",
    "usnav.defaults",
    "usnav.data",
    "usnav.resample",
    "usnav.lifeline",
]
STAGES = [
    "usnav.calibration",
    "usnav.registration",
    "usnav.margins",
    "usnav.publish",
    "usnav.pipeline",
]
#: What runs the stages from outside: bench, the demo, the viewer, batch evaluation, the soak.
TOOLS = [
    "usnav.bench",
    "usnav.viewer",
    "usnav.evaluate",
    "usnav.soak",
]
CLI = ["usnav.cli", "usnav.__main__"]

#: Tools ship in the wheel because they are commands a user runs (``usnav bench`` checks a
#: workstation before surgery, ``usnav evaluate`` scores a dataset), but running usnav never
#: imports them: only their CLI commands do (the demo's orchestration is in the CLI layer,
#: ``usnav/cli/demo.py``), and the dependencies only they need are extras (``bench``,
#: ``evaluate``). No exception is allowed.


def _under(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").exists() or base.is_dir()


def import_edges() -> set[tuple[str, str, str]]:
    """(importer, imported module, where) for every usnav import in the package."""
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        importer = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                edges |= {(importer, a.name, where) for a in node.names if a.name[:5] == "usnav"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if not node.module.startswith("usnav"):
                    continue
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges.add((importer, full if _is_module(full) else node.module, where))
    return edges


def test_the_graph_is_read() -> None:
    edges = import_edges()
    assert len(edges) > 200  # the whole package, not an empty walk
    assert any(a == "usnav.pipeline.live" and b.startswith("usnav.margins") for a, b, _ in edges)


def test_wire_io_and_core_never_import_a_stage() -> None:
    low = WIRE + IO + CORE
    bad = sorted(
        f"{where}: {a} -> {b}"
        for a, b, where in import_edges()
        if _under(a, low) and _under(b, STAGES) and not _under(b, WIRE)
    )
    assert bad == []


def test_stages_and_lower_layers_never_import_bench_the_demo_or_the_viewer() -> None:
    below_tools = WIRE + IO + CORE + STAGES + ["usnav.devices", "usnav.sim"]
    bad = sorted(
        f"{where}: {a} -> {b}"
        for a, b, where in import_edges()
        if _under(a, below_tools) and not _under(a, TOOLS) and _under(b, TOOLS)
    )
    assert bad == []
    # no tool lives inside a stage's room any more
    assert [t for t in TOOLS if _under(t, STAGES)] == []


def test_only_the_entry_point_imports_the_command_line() -> None:
    bad = sorted(
        f"{where}: {a} -> {b}"
        for a, b, where in import_edges()
        if _under(b, CLI) and not _under(a, CLI)
    )
    assert bad == []


def test_running_the_stages_loads_no_tool() -> None:
    code = (
        "import sys\n"
        "import usnav.pipeline.run, usnav.pipeline.live, usnav.calibration, usnav.registration\n"
        "import usnav.margins, usnav.publish.publisher, usnav.publish.slicer, usnav.devices\n"
        "import usnav.igtl, usnav.protocol, usnav.client\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('usnav.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = out.stdout.split()
    assert "usnav.pipeline.live" in loaded
    assert [m for m in loaded if _under(m, TOOLS + CLI)] == []
