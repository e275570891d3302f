"""``--debug`` works wherever the user puts it, as the error lines suggest."""

from __future__ import annotations

from usnav.cli.main import main


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.igs.mha"
    assert main(["info", str(missing), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err
    assert "Traceback" in err and "InputError" in err
    assert err.strip().splitlines()[-1].startswith("usnav info: error:")


def test_without_debug_there_is_one_line(tmp_path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing.igs.mha")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


def test_a_mistyped_option_points_at_its_commands_help(tmp_path, capsys) -> None:
    """One line naming the option, and the sub-command's --help (not usnav's)."""
    import pytest

    with pytest.raises(SystemExit) as stop:
        main(["view", "--snapshot", str(tmp_path / "s.png"), "--bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["usnav view: error: unrecognized arguments: --bogus (see usnav view --help)"]


def _crash(*_args, **_kwargs):
    raise ZeroDivisionError("float division by zero")


def test_an_internal_error_has_its_own_status_and_one_line(tmp_path, capsys, monkeypatch) -> None:
    """A bug is exit status 3, not 1: 1 is a command's answer (a flagged calibration, a
    missed bench target), and a script could not tell a crash from it (session 34)."""
    from usnav.cli import cmd_info
    from usnav.cli.main import EXIT_INTERNAL_ERROR

    monkeypatch.setattr(cmd_info, "describe_file", _crash)
    path = tmp_path / "any.igs.mha"
    path.write_bytes(b"ObjectType = Image\n")
    assert EXIT_INTERNAL_ERROR == 3
    assert main(["info", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "usnav info: internal error: ZeroDivisionError: float division by zero "
        "(run with --debug for the traceback, and please report it)"
    ]
    assert main(["info", str(path), "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("usnav info: internal")


def test_the_exit_statuses_are_in_usnavs_help(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 bad input" in out and "3 an internal error of usnav" in out


def test_debug_after_a_double_dash_is_an_argument(tmp_path, capsys, monkeypatch) -> None:
    """After "--" every word is an argument: a file named --debug is looked for, and no
    traceback is shown for it."""
    monkeypatch.chdir(tmp_path)
    assert main(["info", "--", "--debug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--debug" in err[0] and "Traceback" not in err[0]


def test_no_subcommand_is_a_usage_error_on_stderr(capsys) -> None:
    """Exit 2 is bad input: its help goes to stderr, stdout stays empty for scripts."""
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: usnav" in err
    assert main(["calibrate"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: usnav calibrate" in err


def test_a_refused_value_is_said_without_pydantics_prefix() -> None:
    """A validator's own message reaches the user as written: pydantic's "Value error, "
    prefix said nothing (session 37: "ImageToProbe: Value error, not a rigid-times-scale …")."""
    import pytest
    from pydantic import BaseModel, ValidationError, field_validator

    from usnav.cli.main import _validation_line

    class Options(BaseModel):
        rate_hz: float

        @field_validator("rate_hz")
        @classmethod
        def _positive(cls, value: float) -> float:
            if value <= 0:
                raise ValueError("must be above 0 Hz, got -1.0")
            return value

    with pytest.raises(ValidationError) as info:
        Options(rate_hz=-1.0)
    assert _validation_line(info.value) == "rate_hz: must be above 0 Hz, got -1.0"
