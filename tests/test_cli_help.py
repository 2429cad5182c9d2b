"""Every command's ``--help``: prose paragraphs reach the terminal as one line each (the
terminal wraps them once), examples keep their lines, and each command's help renders."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from spectra_cli.app import COMMANDS, app, reflowed_help


def test_reflowed_help_joins_prose_and_keeps_indented_examples() -> None:
    doc = """First line
        continues here.

        Second paragraph, wrapped
        in the source.

        Examples:

          spectra audit ./base ./lora -o out/
          spectra audit ./base ./lora ./rora -o compare/
        """
    assert reflowed_help(doc) == ("First line continues here.\n\nSecond paragraph, wrapped in the source.\n\n"
                                  "Examples:\n\n  spectra audit ./base ./lora -o out/\n"
                                  "  spectra audit ./base ./lora ./rora -o compare/")
    assert reflowed_help(None) is None


def test_every_command_registers_its_prose_without_source_line_breaks() -> None:
    helps = {info.name: info.help for info in app.registered_commands}
    assert set(helps) == set(COMMANDS)
    for name, text in helps.items():
        for paragraph in text.split("\n\n"):
            if not paragraph.startswith(" "):
                assert "\n" not in paragraph, (name, paragraph)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_commands_help_renders(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert f"Usage: spectra {name}" in result.output and "Examples" in result.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_writes_usage_and_types_as_users_type_them(name: str) -> None:
    """No typer artefacts: arguments in capitals as in the examples (not ``{base}``), no type after
    a flag (not ``<bool>``), a repeatable option's item type (not ``<list[str]>``)."""
    import re

    out = CliRunner().invoke(app, [name, "--help"], terminal_width=200).output
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and re.search(r"\[OPTIONS\]( [A-Z_]+(\.\.\.)?| \[[A-Z_]+\])*\s*$", usage), usage
    options = out[out.index("Options"):]
    assert "<bool>" not in options and "<list[" not in out, out


def test_bracketed_text_in_help_survives_rich_markup() -> None:
    out = CliRunner().invoke(app, ["audit", "--help"], terminal_width=200).output
    assert "[tool.spectra]" in out and "Usage: spectra audit [OPTIONS] BASE ADAPTERS..." in out
