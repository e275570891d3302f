"""The docs an evaluator follows literally say what the code does (session 36 audit): every
option a documented ``usnav`` command line names is an option of that command, each
command's synopsis lists all of its options, and the key tables of docs/devices.md and
docs/pipeline.md give each key its real default.

Session 36 found ``usnav record --force`` documented as impossible ("a recording is never
overwritten") and the live replacement rule's gain stated as 0.003 where the code uses 0.002;
these tests keep the command lines and default tables from drifting again."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from usnav.cli.main import build_parser
from usnav.devices.config import PlaybackConfig, ProbeConfig
from usnav.margins.options import MarginOptions
from usnav.pipeline.config import PipelineOptions
from usnav.registration.worker import WorkerOptions

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _command_lines(text: str) -> list[str]:
    """Inline code spans and code-block lines that run ``usnav`` (continuations joined)."""
    outside_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    lines = [
        span.replace("\n", " ") for span in re.findall(r"`([^`]*usnav [^`]*)`", outside_blocks)
    ]
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)  # shell continuation
        block = re.sub(r"\n\s{6,}", " ", block)  # a usage line wrapped under itself
        lines += [line.split("#")[0] for line in block.splitlines() if "usnav " in line]
    return lines


def _parsers_for(commands: dict, command: str, rest: str) -> list[argparse.ArgumentParser]:
    parser = commands[command]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    kinds = [k for k in (rest.split() or [""])[0].split("|") if k in subs[0].choices]
    # "usnav calibrate spatial|temporal ..." names those kinds; "usnav calibrate --out" any
    return [subs[0].choices[k] for k in kinds] or [parser, *subs[0].choices.values()]


def unknown_options(text: str, commands: dict) -> tuple[list[str], int]:
    """The ``usnav COMMAND --option`` pairs of ``text`` whose option COMMAND does not take, and
    how many options were checked."""
    unknown, checked = [], 0
    for line in _command_lines(text):
        for piece in re.split(r"(?=\busnav [a-z])", line):
            m = re.match(r"usnav ([a-z][a-z-]*)(.*)", piece)
            if not m or m.group(1) not in commands:
                continue
            command, rest = m.groups()
            known = set().union(*map(_options, _parsers_for(commands, command, rest)))
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                checked += 1
                if option not in known | {"--debug"}:
                    unknown.append(f"usnav {command} {option}")
    return unknown, checked


def test_every_option_on_a_documented_command_line_exists():
    commands = build_parser().commands  # type: ignore[attr-defined]
    unknown, checked = [], 0
    for doc in DOCS:
        found, n = unknown_options(doc.read_text(encoding="utf-8"), commands)
        unknown += [f"{doc.name}: {u}" for u in found]
        checked += n
    assert checked > 300  # the docs' command lines were found (a parsing slip checks nothing)
    assert not unknown, unknown


def test_an_option_a_command_does_not_take_is_caught():
    commands = build_parser().commands  # type: ignore[attr-defined]
    text = (
        "Run `usnav record --out a.igs.mha --force --overwrite`, then\n\n```\n"
        "usnav calibrate temporal --video v.igs.mha \\\n    --xml t.xml\n"
        "usnav replay R [--port 0]   # usnav view --no-such\n```\n"
    )
    unknown, checked = unknown_options(text, commands)
    # --xml is spatial's and pivot's, not temporal's; a comment is not a command line
    assert unknown == ["usnav record --overwrite", "usnav calibrate --xml"]
    assert checked == 6


def _key_table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``."""
    rows: list[list[str]] = []
    for line in text[text.index(heading) :].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def _literal(cell: str) -> object:
    """A default cell's TOML value (``"127.0.0.1"``, ``2.0``, ``[]``); None when it is words."""
    m = re.fullmatch(r"`([^`]*)`(?: \(off\))?", cell)
    if not m:
        return None
    try:
        return tomllib.loads(f"v = {m.group(1)}")["v"]
    except tomllib.TOMLDecodeError:
        return None


TABLES = [
    (ProbeConfig, "devices.md", "## Probe client", set()),
    (PlaybackConfig, "devices.md", "## Playback", set()),
    # the [margins], [display] and [registration_budget] tables are described apart
    (
        PipelineOptions,
        "pipeline.md",
        "## Options file",
        {"margins", "display", "registration_budget"},
    ),
    (MarginOptions, "pipeline.md", "A `[margins]` table", set()),
]


@pytest.mark.parametrize(("model", "doc", "heading", "elsewhere"), TABLES)
def test_each_key_table_gives_every_key_its_real_default(model, doc, heading, elsewhere):
    defaults = model()
    listed, wrong, literal_rows = set(), [], 0
    for row in _key_table((ROOT / "docs" / doc).read_text(encoding="utf-8"), heading):
        keys = re.findall(r"`([a-z][a-z0-9_.]*)`", row[0].split("(")[0])
        cells = re.split(r", (?=`)", row[1]) if len(keys) > 1 else [row[1]]
        for key, cell in zip(keys, cells, strict=True):
            listed.add(key.split(".")[0])
            value: object = defaults
            for part in key.split("."):
                value = getattr(value, part)
            documented = _literal(cell)
            if documented is None:  # words: "from `calibration`, else `0`", "the shipped table"
                continue
            literal_rows += 1
            if value != documented:
                wrong.append(f"{key}: doc {cell}, code {value!r}")
    assert literal_rows >= 10
    assert not wrong, wrong
    assert set(model.model_fields) - elsewhere <= listed, "keys missing from the table"


def test_the_live_replacement_gain_the_pipeline_doc_states_is_the_workers():
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    m = re.search(r"`min_similarity_gain` \((\d\.\d+)", text)
    assert m is not None
    assert float(m.group(1)) == WorkerOptions().warm.min_similarity_gain


#: the docs whose code blocks give a command's whole synopsis (other blocks are examples)
SYNOPSES = {
    "devices.md": {"replay", "record"},
    "calibration.md": {"calibrate"},
    "evaluation.md": {"evaluate", "margins", "resect-sweeps"},
    "pipeline.md": {"run"},
    "registration.md": {"register", "register-points", "reconstruct"},
}


def missing_from_synopses(text: str, commands: dict, names: set[str]) -> list[str]:
    """Options of ``names`` that a synopsis line in ``text``'s code blocks leaves out (a
    synopsis: a code-block ``usnav`` line with optional ``[...]`` parts)."""
    missing = []
    for block in re.findall(r"```[a-z]*\n.*?```", text, flags=re.S):
        for line in _command_lines(block):
            m = re.match(r"\s*usnav ([a-z][a-z-]*)(.*)", line)
            if not m or m.group(1) not in names or "[" not in m.group(2):
                continue
            command, rest = m.groups()
            parsers = _parsers_for(commands, command, rest)
            if len(parsers) != 1:
                continue
            for action in parsers[0]._actions:
                if action.help == argparse.SUPPRESS:
                    continue  # kept so old command lines run (usnav view --stale-after)
                for option in action.option_strings:
                    listed = re.search(re.escape(option) + r"(?![\w-])", rest)
                    if option.startswith("--") and option != "--help" and not listed:
                        missing.append(f"usnav {command} {rest.split()[0]}: {option}")
    return missing


def test_each_synopsis_lists_every_option_of_its_command():
    commands = build_parser().commands  # type: ignore[attr-defined]
    missing = []
    for doc, names in SYNOPSES.items():
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        missing += [f"{doc}: {m}" for m in missing_from_synopses(text, commands, names)]
    assert not missing, missing
    # the check itself: a synopsis without record's --force (as before session 36) is caught
    old = "```\nusnav record --out FILE [--duration S] [--frames N]\n```"
    assert "usnav record --out: --force" in missing_from_synopses(old, commands, {"record"})
