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
