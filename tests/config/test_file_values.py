"""A file's values are what they say: ``true`` is not 1, ``"2.0"`` is not 2.0, ``1`` is not
``true`` (session 39: pydantic's lax mode read them so, and ``sweep_climbs = true`` ran with 1
climb). Every table of every file usnav reads into a model is checked: its first whole-number,
number and true/false key each refuse the other kinds, naming the file and the key."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import UnionType
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from usnav.cli.main import main
from usnav.config.calibration import CalibrationFile, load_calibration
from usnav.config.loader import load_toml_model
from usnav.devices.config import DeviceSet, load_device_set
from usnav.errors import ConfigError
from usnav.pipeline.config import PipelineOptions
from usnav.registration.options import RegistrationOptions, load_registration_options
from usnav.sim.options import SimOptions

#: each file usnav reads into a model: its model, its loader, and the table it is read from
FILES: dict[str, tuple[type[BaseModel], Callable[[Path], Any], tuple[str, ...]]] = {
    "run --options": (PipelineOptions, lambda p: load_toml_model(p, PipelineOptions), ()),
    "register/evaluate --config": (
        RegistrationOptions,
        load_registration_options,
        ("registration",),
    ),
    "simulate --options": (SimOptions, lambda p: load_toml_model(p, SimOptions), ()),
    "device set": (DeviceSet, load_device_set, ()),
    "calibration": (CalibrationFile, load_calibration, ()),
}

#: a value of each other kind than the key's, and what the message says the key takes
WRONG = {
    int: ("true", "expected a whole number"),
    float: ("true", "expected a number"),
    bool: ("1", "expected true or false"),
}


def _kind(annotation: Any) -> type | None:
    """int, float or bool for a key of that type (or None allowed), else None."""
    if annotation in (int, float, bool):
        return annotation
    if not isinstance(annotation, UnionType):  # list[float] is not a number
        return None
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and args[0] in (int, float, bool) else None


def _tables(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[tuple]:
    """(table path, model) of ``model`` and of every table nested in it."""
    yield path, model
    for name, field in model.model_fields.items():
        for candidate in (field.annotation, *get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _tables(candidate, (*path, name))


def _cases() -> Iterator[Any]:
    seen: set[type] = set()
    for file, (root, loader, table) in FILES.items():
        for path, model in _tables(root, table):
            if model in seen:  # ErrorStats under two keys: once is enough
                continue
            seen.add(model)
            for kind in (int, float, bool):
                key = next(
                    (k for k, f in model.model_fields.items() if _kind(f.annotation) is kind), None
                )
                if key is not None:
                    yield pytest.param(
                        loader, path, key, kind, id=f"{file}:{'.'.join((*path, key))}"
                    )


CASES = list(_cases())


def test_the_cases_reach_every_table_with_numbers() -> None:
    """The walk finds the tables it should (a table added later is covered by itself)."""
    tables = {c.id.rsplit(".", 1)[0] if "." in c.id else c.id.split(":")[0] for c in CASES}
    assert {
        "run --options",
        "run --options:margins",
        "run --options:registration_budget",
        "run --options:display",
        "register/evaluate --config:registration",
        "simulate --options",
        "device set:probe",
        "device set:probe.reconnect",
        "device set:playback",
        "calibration:spatial",
        "calibration:spatial.calibration_error_mm",
        "calibration:spatial.precision",
        "calibration:temporal",
        "calibration:pivot",
    } <= tables, tables


def test_every_table_refuses_unknown_keys() -> None:
    """A misspelt key is refused, not left at its default (``extra="forbid"`` on each)."""
    for file, (root, _, table) in FILES.items():
        for path, model in _tables(root, table):
            assert model.model_config.get("extra") == "forbid", (file, path, model)


@pytest.mark.parametrize(("loader", "table", "key", "kind"), CASES)
def test_a_value_of_another_kind_is_refused_naming_the_file_and_key(
    tmp_path: Path, loader: Callable[[Path], Any], table: tuple[str, ...], key: str, kind: type
) -> None:
    given, expected = WRONG[kind]
    path = tmp_path / "file.toml"
    header = f"[{'.'.join(table)}]\n" if table else ""
    path.write_text(f"{header}{key} = {given}\n")
    with pytest.raises(ConfigError) as caught:
        loader(path)
    message = str(caught.value)
    where = ".".join((*table, key))
    assert message.startswith(str(path)) and "\n" not in message, message
    assert f"key '{where}': {expected}" in message and f"got {given}" in message, message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('prior_weight = "2.0"', "key 'registration.prior_weight': expected a number"),
        ("sweep_climbs = 2.5", "expected a whole number (e.g. 2), got 2.5"),
        ("sweep_climbs = 2.0", "got 2.0 (write it without a decimal point)"),
        ('uncertainty = "yes"', "expected true or false (e.g. true), got 'yes'"),
        ("max_frames = [40, true]", "key 'registration.max_frames.1': expected a whole number"),
        ("initial_step = [2.0, true]", "key 'registration.initial_step.1': expected a number"),
        ("sweep_climbs = 1979-05-27", "not a value here, got 1979-05-27"),
        ("sweep_climb = 2", "unknown key 'registration.sweep_climb'"),
    ],
)
def test_strings_fractions_dates_and_unknown_keys_are_refused(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "options.toml"
    path.write_text(f"[registration]\n{text}\n")
    with pytest.raises(ConfigError, match="registration") as caught:
        load_registration_options(path)
    assert said in str(caught.value)


def test_whole_numbers_lists_paths_and_false_for_off_still_read(tmp_path: Path) -> None:
    """A whole number is a number (for a key, a list or a pair), a string a path, and the two
    checks ``false`` switches off still switch off."""
    path = tmp_path / "run.toml"
    path.write_text(
        'stale_after_s = 2\ncurve_secret_key = "keys/server.key_secret"\n'
        "[margins]\nconfidence_calibration = [[0, 0.1], [1, 0.9]]\n"
        "[display]\nmax_seen_disagreement_mm = false\nmax_reference_motion_mm = 3\n"
    )
    options = load_toml_model(path, PipelineOptions)
    assert options.stale_after_s == 2.0 and isinstance(options.stale_after_s, float)
    assert options.curve_secret_key == Path("keys/server.key_secret")
    assert options.margins.confidence_calibration == ((0.0, 0.1), (1.0, 0.9))
    assert options.display.max_seen_disagreement_mm is None
    assert options.display.max_reference_motion_mm == 3.0
    path.write_text("[registration]\ninitial_step = [2, 3]\nlevel_spacings_mm = [2, 1]\n")
    registration = load_registration_options(path)
    assert registration.initial_step == (2.0, 3.0) and registration.level_spacings_mm == [2, 1]
    path.write_text("mri_spacing_mm = [1, 1, 1]\ntumor_length_mm = [10, 20]\n")
    assert load_toml_model(path, SimOptions).mri_spacing_mm == (1.0, 1.0, 1.0)
    path.write_text('[playback]\nrate = "max"\n')
    assert load_device_set(path).playback.rate == "max"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # equal to 1, so Literal[1, 2] took it even in strict mode
        ("[probe]\nheader_version = true", "key 'probe.header_version': must be 1 or 2"),
        # float | 'max': the union said the key twice ('rate.float', "rate.literal['max']")
        ("[playback]\nrate = true", "key 'playback.rate': must be 'max' or a speed factor"),
    ],
)
def test_device_keys_of_two_kinds_refuse_true_once(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_device_set(path)
    message = str(caught.value)
    assert said in message and message.count("key '") == 1, message


def test_the_cli_says_a_boolean_for_a_number_on_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = tmp_path / "options.toml"
    options.write_text("[registration]\nsweep_climbs = true\n")
    sweep, mri, cal, init, out = (
        str(tmp_path / name)
        for name in ("sweep.igs.mha", "mri.nii.gz", "cal.toml", "init.txt", "result.json")
    )
    argv = ["register", sweep, "--mri", mri, "--calibration", cal, "--init", init, "--out", out]
    status = main([*argv, "--config", str(options)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(options) in err and "key 'registration.sweep_climbs'" in err, err
    assert "expected a whole number" in err and "got true" in err, err


@pytest.mark.parametrize(
    "text,said",
    [
        ("[display]\nmargin_error_mm = 0\nmargin_error_mm = 1\n", "key 'margin_error_mm'"),
        ("[display]\nmargin_error_mm = 0\n[display]\nmax_unchecked_s = 30\n", "table [display]"),
    ],
)
def test_a_key_or_table_given_twice_is_named(tmp_path: Path, text: str, said: str) -> None:
    """tomllib says only "Cannot overwrite a value (at line 3, column 20)": the message names
    the key (or table) and its line, and what to do."""
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{re.escape(said)} is given twice \(line 3\)"):
        load_toml_model(path, PipelineOptions)
    path.write_text(text.replace("display", "registration"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is given twice \(line 3\)"):
        load_registration_options(path)
