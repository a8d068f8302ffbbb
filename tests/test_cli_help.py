"""Tests of the usage placeholders (metavars) on the command line's help pages."""

import enum
import re
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from gymchurn.cli import app
from gymchurn.cli_help import PlainHelpTyper
from tests.test_cli import _command_paths, _invoke

# Typer's own type labels, which the plain-help classes replace.
TYPE_LABELS = ("<bool>", "<str>", "<file>", "<path>", "<int", "<float", "<list")


def _usage_line(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if "Usage:" in line)


def test_help_pages_have_no_type_labels():
    paths = [(), *_command_paths(typer.main.get_command(app))]
    assert ("load-csv",) in paths
    assert ("models", "show") in paths
    for path in paths:
        result = _invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        for label in TYPE_LABELS:
            assert label not in result.stdout, (path, label)
        assert "{" not in _usage_line(result.stdout), path


def test_help_flag_has_no_placeholder():
    result = _invoke("--help")

    assert re.search(r"--help\s+Show this message", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("command", "usage", "option_metavars"),
    [
        # A required argument is named bare, as click prints it.
        (("load-csv",), "load-csv [OPTIONS] FILE", {"--month": "MONTH"}),
        # An optional argument is in brackets, and a Path option for a folder is DIR.
        (("validate",), "validate [OPTIONS] [FILE]", {"--docs": "DIR"}),
        (("models", "show"), "models show [OPTIONS] VERSION", {}),
        # Numbers show their type, text options their name or the given metavar.
        (
            ("at-risk",),
            "at-risk [OPTIONS]",
            {"--limit": "INTEGER", "--min-probability": "FLOAT", "--output": "PATH"},
        ),
        (("simulate",), "simulate [OPTIONS]", {"--scenario-start": "MONTH"}),
    ],
)
def test_help_shows_plain_metavars(command, usage, option_metavars):
    result = _invoke(*command, "--help")

    assert result.exit_code == 0, result.output
    assert _usage_line(result.stdout).endswith(usage)
    for option, metavar in option_metavars.items():
        assert re.search(rf"{option}\s+{metavar}\b", result.stdout), (option, result.stdout)


def test_command_flag_has_no_placeholder():
    result = _invoke("load-csv", "--help")

    assert re.search(r"--replace\s+Delete the month", result.stdout), result.stdout


def test_missing_argument_error_names_metavar():
    result = _invoke("load-csv", "--month", "2026-10")

    assert result.exit_code == 2
    assert "Missing argument 'FILE'" in result.output
    assert "load-csv [OPTIONS] FILE" in result.output


class _Tier(enum.Enum):
    HIGH = "high"
    LOW = "low"


def test_plain_help_typer_choice_list_and_flag():
    toy = PlainHelpTyper()

    @toy.command()
    def export(
        folder: Annotated[Path, typer.Argument()],
        tier: Annotated[_Tier, typer.Option()] = _Tier.HIGH,
        month: Annotated[list[str] | None, typer.Option()] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print only.")] = False,
    ) -> None:
        """Export one tier."""

    result = CliRunner().invoke(toy, ["--help"])

    assert result.exit_code == 0, result.output
    assert "[OPTIONS] FOLDER" in _usage_line(result.stdout)
    assert re.search(r"--tier\s+\[high\|low\]", result.stdout), result.stdout
    assert re.search(r"--month\s+MONTH\b", result.stdout), result.stdout
    assert re.search(r"--dry-run\s+Print only", result.stdout), result.stdout
    for label in TYPE_LABELS:
        assert label not in result.stdout, label
