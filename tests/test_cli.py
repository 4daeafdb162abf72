"""CLI smoke tests: every subcommand has a working --help."""

import pytest

from geocells.cli import COMMANDS, main


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert name in capsys.readouterr().out


def _crash(args):
    raise KeyError("boom")


def test_an_unexpected_exception_is_one_line_naming_command_and_input(
    monkeypatch, capsys, tmp_path
):
    import geocells.commands.dataset as dataset_command

    monkeypatch.setattr(dataset_command, "main", _crash)
    assert main(["dataset", "check", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("geocells dataset check: unexpected KeyError: 'boom'")
    assert f"(input: {tmp_path / 'data'})" in err and "-v" in err
    for argv in (["-v", "dataset", "check", "x"], ["dataset", "check", "x", "-v"]):
        assert main(argv) == 2  # -v before or after: the traceback, and the same status
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and 'raise KeyError("boom")' in err
        assert err.rstrip().splitlines()[-1].startswith("geocells dataset check: unexpected")


def test_verbose_never_changes_the_exit_status(capsys, tmp_path):
    for argv in (["dataset", "check", str(tmp_path / "none")], ["cells", "--region", "nowhere",
                 "--level", "3", "--count"]):  # fmt: skip
        quiet = main(argv)
        capsys.readouterr()
        assert main(["-v", *argv]) == quiet == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("geocells ")
