"""``usnav replay`` / ``usnav record`` bad input: one line naming the problem, exit 2."""

from __future__ import annotations

from igtl_helpers import refused_port

from usnav.cli.main import main


def test_replay_of_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "none.igs.mha"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.igs.mha" in err[0] and "no such file" in err[0]


def test_replay_beyond_loopback_without_allow_list_is_refused(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "x.igs.mha"), "--host", "0.0.0.0"]) == 2
    assert "--allow" in capsys.readouterr().err


def test_record_without_a_server_gives_up_with_the_reason(tmp_path, capsys):
    with refused_port() as number:
        port = str(number)
        out = str(tmp_path / "r.igs.mha")
        code = main(["record", "--port", port, "--out", out, "--connect-timeout", "0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no frame from 127.0.0.1:" + port in err and "refused" in err
    assert not (tmp_path / "r.igs.mha").exists()
