"""The command line's one progress bar (usnav.cli.progress), as a user sees it on stderr."""

from __future__ import annotations

from usnav.cli.progress import ProgressBar


def test_counts_and_fractions_are_drawn_on_stderr(capsys) -> None:
    with ProgressBar(transient=False) as bar:
        bar.update("segmenting video", 5, 10)
        bar.update("segmenting video", 10, 10)
    with ProgressBar(transient=False, counts=False) as bar:
        bar.update("registering", 0.5, 1.0, "coarse search")
    out, err = capsys.readouterr()
    assert out == ""  # stdout keeps the command's answer
    assert "segmenting video" in err and "10/10" in err
    assert "registering: coarse search" in err and "50%" in err


def test_disabled_bar_draws_nothing(capsys) -> None:
    bar = ProgressBar(enabled=False)
    bar.update("converting frames", 3, 7)
    bar.stop()
    assert capsys.readouterr() == ("", "")


def test_a_transient_bar_leaves_nothing_on_a_log(capsys) -> None:
    """Session 42: on a stderr that is not a terminal, usnav register's transient bar left a
    blank line, so a refused input was two lines on stderr, not one."""
    with ProgressBar(counts=False) as bar:
        bar.update("registering", 0.5, 1.0, "coarse search")
    assert capsys.readouterr() == ("", "")
