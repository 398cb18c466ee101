"""Every command's `--help` renders (argparse formats help strings with `%`: a stray percent sign in an option's help
once made `asarg sft --help` crash with a TypeError)."""

from __future__ import annotations

import pytest

from asarg.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()
